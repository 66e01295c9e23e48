"""Sampling follows the knobs asked for (issue #11, items 4 and 8).

- A model directory's own ``generation_config.json`` (temperature 0.3, top-k 5, ...) must
  not leak into generation: rolekit records logprobs of the distribution it asked for.
- Constrained choices: each ask is scored at its own temperature, and top-k/top-p cut the
  choice distribution before sampling.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections import Counter
from pathlib import Path

import pytest
import torch

from rolekit.backends.hf import HFBackend, teacher_forced
from rolekit.chat import ChatTokenizer
from rolekit.models import TINY, load_model
from rolekit.table import AskRequest, ModelResponder
from rolekit.types import GenerationRequest

# --------------------------------------------------------------------------- item 4: a model's own generation_config

PICKY = dict(do_sample=True, temperature=0.3, top_k=5, top_p=0.5)  # what the checkpoint's own file asks for


@pytest.fixture(scope="module")
def picky_dir(tmp_path_factory) -> Path:
    """tiny-random saved as a user's model directory whose generation_config.json sets sampling knobs."""
    from transformers import GenerationConfig

    path = tmp_path_factory.mktemp("picky")
    lm = load_model(TINY)
    lm.model.generation_config = GenerationConfig(**PICKY, eos_token_id=lm.tokenizer.eos_token_id)
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    saved = json.loads((path / "generation_config.json").read_text())
    assert {k: saved[k] for k in PICKY} == PICKY
    return path


@pytest.fixture(scope="module")
def picky(picky_dir):
    return load_model(str(picky_dir))


def test_a_model_directorys_sampling_knobs_are_not_loaded(picky, picky_dir):
    """load_model gives every model a neutral generation config (before: only tiny/embedded)."""
    own = picky.model.generation_config
    assert not own.do_sample
    assert own.temperature in (None, 1.0) and own.top_p in (None, 1.0) and own.top_k in (None, 0, 50)
    assert own.eos_token_id == picky.tokenizer.eos_token_id  # special token ids are kept
    assert own.pad_token_id == picky.tokenizer.pad_token_id


def test_an_adapter_on_a_model_directory_is_neutral_too(picky_dir, tmp_path):
    import peft

    base = load_model(str(picky_dir)).model
    adapter = peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["q_proj"]))
    adapter.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert not loaded.model.generation_config.do_sample
    assert loaded.model.get_base_model().generation_config.temperature in (None, 1.0)


def test_sampling_at_temperature_1_ignores_the_directorys_top_k_and_matches_teacher_forcing(picky):
    chat = ChatTokenizer(picky.tokenizer)
    backend = HFBackend(picky.model, chat, max_batch_size=64)
    prompt = chat.encode("Say something.")
    torch.manual_seed(0)
    generations = backend.generate([GenerationRequest(prompt, max_new_tokens=2, temperature=1.0)] * 64)
    first = Counter(g.completion_ids[0] for g in generations)
    assert len(first) > 5, first  # top_k=5 from the directory would allow at most 5
    expected = teacher_forced(picky.model, [(prompt, g.completion_ids) for g in generations], temperature=1.0)
    for g, e in zip(generations, expected):
        assert g.logprobs == pytest.approx(e, abs=1e-4)


def test_greedy_generation_ignores_the_directorys_do_sample(picky):
    chat = ChatTokenizer(picky.tokenizer)
    prompt = chat.encode("Say something.")
    request = GenerationRequest(prompt, max_new_tokens=4, temperature=0.0)
    outs = set()
    for seed in range(3):
        torch.manual_seed(seed)
        [g] = HFBackend(picky.model, chat).generate([request])
        outs.add(g.completion_ids)
    assert len(outs) == 1
    ids = torch.tensor([list(prompt)])
    out = picky.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4)
    assert tuple(out[0, len(prompt):].tolist()) == outs.pop()  # a bare generate() is greedy too


def test_transformers_pin_excludes_the_versions_that_swap_in_the_models_sampling_knobs():
    """transformers 4.50-4.57 replace knobs passed at the library default (temperature 1.0,
    top_p 1.0) by the model's generation_config; 5.x keeps explicitly set values."""
    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    [spec] = [Requirement(r).specifier for r in pyproject["project"]["dependencies"] if r.startswith("transformers")]
    for bad in ("4.50.0", "4.53.3", "4.57.6"):
        assert not spec.contains(bad), bad
    assert spec.contains("5.24.0")


# --------------------------------------------------------------------------- item 8: constrained choices

CHOICES = ("1]", "2]", "3]", "4]")


@pytest.fixture(scope="module")
def responder_parts(tiny):
    chat = ChatTokenizer(tiny.tokenizer)
    return HFBackend(tiny.model, chat, max_batch_size=64), chat


def responder(responder_parts, **defaults) -> ModelResponder:
    backend, chat = responder_parts
    return ModelResponder("policy", backend, chat, **defaults)


def ask(prompt: str, n: int, **sampling) -> AskRequest:
    return AskRequest("nim", "player_0", prompt, n, sampling, prefix="[", choices=CHOICES)


def choice_probs(r: ModelResponder, a: AskRequest, temperature: float) -> torch.Tensor:
    """p_T(answer | the legal answers), from the backend's own scores at ``temperature``."""
    scores = r.backend.score([(r.prompt_ids(a), r.chat.text_ids(c)) for c in a.choices], temperature=temperature)
    return torch.softmax(torch.tensor([sum(s) for s in scores], dtype=torch.float64), 0)


def shares(answers) -> list[float]:
    counts = Counter(a.text for a in answers)
    return [counts["[" + c] / len(answers) for c in CHOICES]


def test_each_ask_in_a_round_is_scored_and_sampled_at_its_own_temperature(responder_parts):
    r = responder(responder_parts)
    cold, hot = ask("Pick one.", 400, temperature=0.5), ask("Pick one.", 400, temperature=2.0)
    p_cold, p_hot = choice_probs(r, cold, 0.5), choice_probs(r, hot, 2.0)
    assert p_cold[1] > 0.95 and p_hot[1] < 0.7  # the two temperatures give clearly different policies
    calls = r.backend.calls
    torch.manual_seed(0)
    cold_answers, hot_answers = r.respond([cold, hot])
    assert r.backend.calls == calls + 2  # one scoring pass per distinct temperature
    for answers, p, t in ((cold_answers, p_cold, 0.5), (hot_answers, p_hot, 2.0)):
        per_token = r.backend.score([(r.prompt_ids(cold), r.chat.text_ids(c)) for c in CHOICES], temperature=t)
        for a in answers:
            j = CHOICES.index(a.text[1:])
            assert a.temperature == t
            assert a.choice_logprob == pytest.approx(math.log(p[j]), abs=1e-6)
            assert a.logprobs == pytest.approx(per_token[j], abs=1e-5)
        assert max(abs(s - q) for s, q in zip(shares(answers), p.tolist())) < 0.08, (t, shares(answers), p)


def test_asks_at_one_temperature_share_one_scoring_pass(responder_parts):
    r = responder(responder_parts)
    calls = r.backend.calls
    r.respond([ask("Pick one.", 2, temperature=0.7), ask("Which?", 2, temperature=0.7), ask("Which?", 1)])
    assert r.backend.calls == calls + 2  # 0.7 twice, the default 1.0 once
    calls = r.backend.calls
    r.respond([ask("Pick one.", 2, temperature=0.0), ask("Which?", 2)])  # greedy scores at temperature 1
    assert r.backend.calls == calls + 1


def test_top_k_1_always_takes_the_likeliest(responder_parts):
    r = responder(responder_parts)
    a = ask("Which?", 300, top_k=1)
    p = choice_probs(r, a, 1.0)
    best = int(torch.argmax(p))
    assert p[best] < 0.6  # without top_k the others would be drawn about half the time
    torch.manual_seed(0)
    [answers] = r.respond([a])
    assert {x.text for x in answers} == {"[" + CHOICES[best]}
    # the recorded value is log pi among the legal answers, untruncated (what the learner recomputes)
    assert answers[0].choice_logprob == pytest.approx(math.log(p[best]), abs=1e-6)


def test_top_k_from_the_responder_defaults(responder_parts):
    r = responder(responder_parts, top_k=1)
    p = choice_probs(r, ask("Which?", 1), 1.0)
    torch.manual_seed(1)
    [answers] = r.respond([ask("Which?", 100)])
    assert {x.text for x in answers} == {"[" + CHOICES[int(torch.argmax(p))]}


def test_top_p_keeps_the_smallest_set_reaching_it_renormalised(responder_parts):
    r = responder(responder_parts)
    a = ask("Choose a number.", 600, top_p=0.9)
    p = choice_probs(r, a, 1.0)
    order = torch.argsort(p, descending=True).tolist()
    assert p[order[0]] < 0.9 <= p[order[0]] + p[order[1]]  # the likeliest two reach top_p
    torch.manual_seed(0)
    [answers] = r.respond([a])
    drawn = shares(answers)
    assert drawn[order[2]] == drawn[order[3]] == 0
    kept = p[order[0]] / (p[order[0]] + p[order[1]])
    assert abs(drawn[order[0]] - kept.item()) < 0.06, (drawn, kept)


def test_temperature_zero_still_takes_the_likeliest_at_temperature_1(responder_parts):
    r = responder(responder_parts, temperature=0.0)
    a = ask("Your move.", 50)
    p = choice_probs(r, a, 1.0)
    [answers] = r.respond([a])
    best = int(torch.argmax(p))
    assert {x.text for x in answers} == {"[" + CHOICES[best]}
    assert all(x.temperature == 1.0 for x in answers)
    assert answers[0].choice_logprob == pytest.approx(math.log(p[best]), abs=1e-6)


@pytest.mark.parametrize("top_p,top_k,kept", [
    (1.0, 0, [0.1, 0.2, 0.3, 0.4]),
    (1.0, 2, [0, 0, 3 / 7, 4 / 7]),
    (0.7, 0, [0, 0, 3 / 7, 4 / 7]),  # 0.4 < 0.7 <= 0.4 + 0.3
    (0.4, 0, [0, 0, 0, 1]),  # the likeliest alone reaches it
    (0.5, 3, [0, 0, 3 / 7, 4 / 7]),  # top-p over the top-3 renormalised: 4/9 < 0.5 <= 7/9
    (1.0, 1, [0, 0, 0, 1]),
    (0.01, 10, [0, 0, 0, 1]),
])
def test_truncated_keeps_top_k_then_the_smallest_top_p_set(top_p, top_k, kept):
    from rolekit.backends.hf import truncated

    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    assert truncated(probs, top_p=top_p, top_k=top_k).tolist() == pytest.approx(kept)
