"""Generation that shares its prompts (``HFBackend._decode_batch``) against transformers'
``generate`` (``share_prefill=False``), on tiny-random: the same tokens, logprobs equal to a
teacher-forced pass, for prompts of different lengths, with a common header and repeats."""

from __future__ import annotations

import copy

import pytest
import torch

from rolekit.backends.hf import MIN_SHARED_PREFIX, HFBackend, shared_prefix
from rolekit.chat import ChatTokenizer
from rolekit.testing import peaked_tiny_random
from rolekit.types import GenerationRequest

RULES = ("You are playing a game. The rules: each player names a number from one to nine; the higher "
         "number wins unless it is more than twice the other. Answer with the number in brackets.")
QUESTIONS = ["Your move?", "The other player said 7. Your move?", "Say a number, any number you like, quickly."]


@pytest.fixture(scope="module")
def lm():
    return peaked_tiny_random()


@pytest.fixture(scope="module")
def chat(lm) -> ChatTokenizer:
    return ChatTokenizer(lm.tokenizer)


def asks(chat, n=3, max_new=(9, 4, 12), **sampling) -> list[GenerationRequest]:
    """``n`` requests for each of three prompts sharing a header (the rules), interleaved,
    and one short prompt with no header; ``seed`` in ``sampling`` seeds each its own."""
    seed = sampling.pop("seed", None)
    prompts = [chat.encode([{"role": "system", "content": RULES}, {"role": "user", "content": q}]) for q in QUESTIONS]
    out = [GenerationRequest(prompts[k], max_new_tokens=max_new[k], **sampling,
                             seed=None if seed is None else seed + 10 * j + k)
           for j in range(n) for k in range(len(prompts))]
    return out + [GenerationRequest(chat.encode("Hi"), max_new_tokens=6, **sampling,
                                    seed=None if seed is None else seed - 1)]


def teacher_forced(model, request, generation) -> torch.Tensor:
    """log pi(completion | prompt) from one unpadded forward pass."""
    ids = torch.tensor([list(request.prompt_ids) + list(generation.completion_ids)])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    temperature = request.temperature if request.temperature > 0 else 1.0
    p = len(request.prompt_ids)
    logp = torch.log_softmax(logits[p - 1:-1] / temperature, dim=-1)
    return logp.gather(-1, torch.tensor(generation.completion_ids)[:, None])[:, 0]


def both(lm, chat, requests, seed=0, **kw):
    """(shared, generate) generations of ``requests`` from the same global RNG state."""
    torch.manual_seed(seed)
    shared = HFBackend(lm.model, chat, share_prefill=True, **kw).generate(requests)
    torch.manual_seed(seed)
    plain = HFBackend(lm.model, chat, share_prefill=False, **kw).generate(requests)
    return shared, plain


def test_the_prompts_share_a_header_and_repeat(chat):
    requests = asks(chat)
    assert shared_prefix([r.prompt_ids for r in requests[:3]]) >= MIN_SHARED_PREFIX
    assert len({r.prompt_ids for r in requests}) == 4 < len(requests)
    assert len({len(r.prompt_ids) for r in requests}) == 4  # left padding and positions matter


@pytest.mark.parametrize("sampling", [dict(temperature=0.0), dict(temperature=1.0, seed=7),
                                      dict(temperature=0.8, top_p=0.9, top_k=40, seed=3)],
                         ids=["greedy", "seeded", "seeded-top-p-k"])
def test_same_tokens_as_generate_with_rows_stopping_early(lm, chat, sampling):
    requests = asks(chat, **sampling)
    shared, plain = both(lm, chat, requests)
    assert [g.finish_reason for g in plain].count("length") == len(plain)
    assert [g.completion_ids for g in shared] == [g.completion_ids for g in plain]
    for a, b in zip(shared, plain):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    # an end-of-turn token some rows sample mid-way: those rows stop there and leave the batch
    stop = next(g.completion_ids[2] for g in plain if len(g.completion_ids) > 4)
    eot = copy.copy(chat)
    eot.eos_ids = frozenset({stop})
    shared, plain = both(lm, eot, requests)
    assert "stop" in [g.finish_reason for g in plain]
    assert [(g.completion_ids, g.finish_reason) for g in shared] == [(g.completion_ids, g.finish_reason) for g in plain]


def test_same_draws_as_generate_from_the_global_rng_until_a_row_stops(lm, chat):
    requests = asks(chat, max_new=(8, 8, 8), temperature=1.0)
    requests[-1] = GenerationRequest(requests[-1].prompt_ids, max_new_tokens=8, temperature=1.0)
    shared, plain = both(lm, chat, requests, seed=5)
    assert all(g.finish_reason == "length" for g in plain)  # no row stops: generate's draws, one for one
    assert [g.completion_ids for g in shared] == [g.completion_ids for g in plain]
    torch.manual_seed(6)
    other = HFBackend(lm.model, chat, share_prefill=True).generate(requests)
    assert [g.completion_ids for g in other] != [g.completion_ids for g in shared]  # it does sample


@pytest.mark.parametrize("sampling", [dict(temperature=0.0), dict(temperature=1.0), dict(temperature=0.7, seed=1),
                                      dict(temperature=1.3, top_p=0.9, top_k=20)],
                         ids=["greedy", "t1", "t0.7-seeded", "t1.3-top-p-k"])
def test_logprobs_match_a_teacher_forced_pass(lm, chat, sampling):
    torch.manual_seed(0)
    requests = asks(chat, **sampling)
    backend = HFBackend(lm.model, chat, share_prefill=True, max_batch_size=5)  # batches of mixed prompts
    generations = backend.generate(requests)
    assert backend.calls == 2
    for request, generation in zip(requests, generations):
        assert len(generation.completion_ids) == request.max_new_tokens
        expected = teacher_forced(lm.model, request, generation)
        assert torch.allclose(torch.tensor(generation.logprobs), expected, atol=1e-4)



def test_prompts_are_shared_on_the_cpu_only_by_default(lm, chat, monkeypatch):
    from rolekit.backends import hf

    assert hf.share_prefill("cpu") and not hf.share_prefill(torch.device("cuda", 0))
    backend = HFBackend(lm.model, chat)
    ran = []
    monkeypatch.setattr(backend, "_decode_batch", lambda batch: ran.append(len(batch)) or [None] * len(batch))
    backend.generate(asks(chat, n=2))
    assert ran == [7]  # the shared path, one batch
