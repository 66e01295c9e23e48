"""The vLLM backend (CPU build) against the HF backend and the learner, on a real random Llama.

Every comparison runs both backends on the same weights: vLLM's generation must be the
HF backend's token for token (greedy), its logprobs the learner's teacher-forced ones.
"""

from __future__ import annotations

import copy

import peft
import pytest
import torch

from rolekit.backends import Backend
from rolekit.backends.hf import HFBackend, teacher_forced
from rolekit.backends.vllm import VLLMBackend
from rolekit.learner import policy_logprobs
from rolekit.models import TINY, load_model
from rolekit.table import AskRequest, ModelResponder
from rolekit.types import GenerationRequest, Sample

# Logprobs of the same fp32 model through vLLM's kernels and transformers' differ by float
# noise only: ~1e-5 per token on these weights; adapters far larger than training makes
# (every LoRA weight ~N(0, 0.5^2)) reached 1.6e-3. The tests allow 1e-3.
TOL = 1e-3
KV = 64 << 20  # KV cache bytes per engine: 256k tokens of this model
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def greedy(prompts, n=24, **kw):
    return [GenerationRequest(p, max_new_tokens=n, temperature=0.0, **kw) for p in prompts]


def same_generations(a, b):
    assert [g.completion_ids for g in a] == [g.completion_ids for g in b]
    assert [g.finish_reason for g in a] == [g.finish_reason for g in b]
    for x, y in zip(a, b):
        assert x.logprobs == pytest.approx(y.logprobs, abs=TOL)


def randomize_lora(model, seed: int, scale: float = 0.2) -> None:
    """A LoRA update big enough to change greedy generations (peft starts B at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


@pytest.fixture(scope="module")
def full(model_dir, chat):
    """The model trained in full: its HF and vLLM backends."""
    model = load_model(str(model_dir), finetune="full").model
    return model, HFBackend(model, chat), VLLMBackend(model, chat, max_batch_size=16, kv_cache_bytes=KV)


@pytest.fixture(scope="module")
def lora(model_dir, chat):
    """The model with a LoRA adapter: its HF and vLLM backends (3 adapter slots)."""
    model = peft.get_peft_model(load_model(str(model_dir), finetune="lora").model, peft.LoraConfig(
        r=8, lora_alpha=16, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    randomize_lora(model, seed=1)
    return model, HFBackend(model, chat), VLLMBackend(model, chat, max_batch_size=16, adapters=3, kv_cache_bytes=KV)


def test_is_a_backend(full):
    assert isinstance(full[2], Backend) and full[2].name == "vllm"


def test_greedy_matches_hf_token_for_token(full, prompts):
    _, hf, vllm = full
    a, b = vllm.generate(greedy(prompts)), hf.generate(greedy(prompts))
    same_generations(a, b)
    assert all(len(g.completion_ids) == 24 for g in a)  # a random model rarely says end-of-turn


def test_sleep_is_a_no_op_on_the_cpu(full, prompts):
    """The engine calls sleep() before every learner step; on the CPU build nothing is freed."""
    _, hf, vllm = full
    vllm.sleep()
    assert not vllm._asleep
    same_generations(vllm.generate(greedy(prompts)), hf.generate(greedy(prompts)))


def test_stop_ids_end_generation_as_in_hf(full, prompts):
    """A stop token ends the completion, kept as its last token, finish reason "stop"."""
    _, hf, vllm = full
    first = hf.generate(greedy(prompts))
    stops = [frozenset({g.completion_ids[5]}) for g in first]  # each completion's 6th token
    reqs = [GenerationRequest(p, max_new_tokens=24, temperature=0.0, stop_ids=s) for p, s in zip(prompts, stops)]
    a, b = vllm.generate(reqs), hf.generate(reqs)
    same_generations(a, b)
    assert all(g.finish_reason == "stop" and g.completion_ids[-1] in s for g, s in zip(a, stops))
    assert all(len(g.completion_ids) <= 6 for g in a)


def test_budget_and_empty_budget(full, prompts):
    _, _, vllm = full
    out = vllm.generate([GenerationRequest(prompts[0], max_new_tokens=0), *greedy(prompts[:1], n=3)])
    assert out[0].completion_ids == () and out[0].finish_reason == "length"
    assert len(out[1].completion_ids) == 3 and out[1].finish_reason == "length"


def test_prompt_longer_than_the_engine_is_a_clear_error(full):
    _, _, vllm = full
    with pytest.raises(ValueError, match="max_model_len"):
        vllm.generate([GenerationRequest((5,) * (vllm.max_model_len + 1), max_new_tokens=2)])


@pytest.mark.parametrize("temperature,top_p,top_k", [(1.0, 1.0, 0), (0.7, 1.0, 0), (1.3, 0.8, 0), (0.9, 1.0, 20)])
def test_sampled_logprobs_agree_with_the_learner(full, prompts, temperature, top_p, top_k):
    """Recorded logprobs = the learner's teacher-forced logprobs at the sampling temperature,
    before top-p/top-k truncation (vLLM reports truncated ones: the backend rescores those)."""
    model, _, vllm = full
    torch.manual_seed(0)
    reqs = [GenerationRequest(p, max_new_tokens=16, temperature=temperature, top_p=top_p, top_k=top_k)
            for p in prompts for _ in range(2)]
    gens = vllm.generate(reqs)
    samples = [Sample("g", "r", r.prompt_ids, g.completion_ids, g.logprobs, advantage=0.0, temperature=temperature)
               for r, g in zip(reqs, gens)]
    with torch.no_grad():
        learner, mask, _ = policy_logprobs(model, samples, torch.device("cpu"))
    for row, g in enumerate(gens):
        assert len(g.completion_ids) > 0
        assert list(g.logprobs) == pytest.approx(learner[row][mask[row]].tolist(), abs=TOL)
    if top_p < 1.0 or top_k > 0:  # the untruncated values are below the cut distribution's
        assert any(lp < -1e-3 for g in gens for lp in g.logprobs)


def test_score_matches_teacher_forcing(full, prompts, chat):
    model, hf, vllm = full
    pairs = [(p, chat.text_ids(c)) for p in prompts for c in ("bet", "check", "I fold now")] + [(prompts[0], ())]
    for temperature in (1.0, 0.6):
        got = vllm.score(pairs, temperature=temperature)
        want = teacher_forced(model, pairs, temperature=temperature)
        assert [len(v) for v in got] == [len(v) for v in want]
        for g, w in zip(got, want):
            assert list(g) == pytest.approx(list(w), abs=TOL)
    with pytest.raises(ValueError, match="temperature"):
        vllm.score(pairs, temperature=0.0)


def test_constrained_choices_as_in_hf(full, prompts, chat):
    """ModelResponder's constrained choices on either backend: same picks (greedy), same logprobs."""
    _, hf, vllm = full
    asks = [AskRequest("g", "r", "You hold the King. bet or check?", 2, {"temperature": 0.0},
                       choices=("bet", "check", "fold")),
            AskRequest("g", "r", "Pick a colour", 1, {"temperature": 0.8}, prefix="[", choices=("red]", "blue]"))]
    a = ModelResponder("policy", vllm, chat).respond(asks)
    b = ModelResponder("policy", hf, chat).respond(asks)
    assert [x.text for x in a[0]] == [x.text for x in b[0]]
    for x, y in zip(a[0] + a[1][:1], b[0] + b[1][:1]):
        if x.text == y.text:
            assert list(x.logprobs) == pytest.approx(list(y.logprobs), abs=TOL)
    assert a[1][0].choice_ids == b[1][0].choice_ids and a[1][0].text.startswith("[")


def test_full_weight_update_changes_generation_as_in_hf(full, prompts, chat):
    """A real learner step on the full weights, then sync: vLLM generates what HF generates
    from the updated weights, and that differs from before the update."""
    from rolekit.config import AlgorithmConfig
    from rolekit.learner import Learner

    model, hf, vllm = full
    before = vllm.generate(greedy(prompts))
    learner = Learner(model, [p for p in model.parameters() if p.requires_grad], AlgorithmConfig(lr=3e-2),
                      device=torch.device("cpu"))
    samples = [Sample("g", "r", p, g.completion_ids, g.logprobs, advantage=1.0 if k % 2 else -1.0, temperature=1.0,
                      max_new_tokens=24) for k, (p, g) in enumerate(zip(prompts, before))]
    version = vllm.version
    learner.step(samples, 24)
    vllm.sync()
    after = vllm.generate(greedy(prompts))
    same_generations(after, hf.generate(greedy(prompts)))
    assert [g.completion_ids for g in after] != [g.completion_ids for g in before]
    assert vllm.version == version + 1


def test_lora_update_changes_generation_as_in_hf(lora, prompts):
    model, hf, vllm = lora
    before = vllm.generate(greedy(prompts))
    same_generations(before, hf.generate(greedy(prompts)))
    randomize_lora(model, seed=2)
    vllm.sync()
    after = vllm.generate(greedy(prompts))
    same_generations(after, hf.generate(greedy(prompts)))
    assert [g.completion_ids for g in after] != [g.completion_ids for g in before]


def test_snapshot_adapters_share_the_engine(lora, prompts):
    """Policy.using swaps a snapshot's LoRA weights in and syncs: the snapshot gets an
    adapter slot of its own (same engine); swapping the policy back reloads nothing."""
    from rolekit.backends import vllm as module

    model, hf, vllm = lora
    params = {n: p for n, p in model.named_parameters() if "lora_" in n}
    snapshot = {n: p.detach().clone() for n, p in params.items()}
    randomize_lora(model, seed=3)
    vllm.sync()
    current = {n: p.detach().clone() for n, p in params.items()}
    policy_out = vllm.generate(greedy(prompts))

    def load(weights):
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(weights[n])
        vllm.sync()

    loads = []
    add_lora = vllm.llm.llm_engine.add_lora
    vllm.llm.llm_engine.add_lora = lambda request: loads.append(request.lora_int_id) or add_lora(request)
    try:
        for round in range(2):
            load(snapshot)
            snap_out = vllm.generate(greedy(prompts))
            same_generations(snap_out, hf.generate(greedy(prompts)))
            load(current)
            same_generations(vllm.generate(greedy(prompts)), policy_out)
    finally:
        vllm.llm.llm_engine.add_lora = add_lora
    assert [g.completion_ids for g in snap_out] != [g.completion_ids for g in policy_out]
    assert len(loads) <= 1  # the snapshot loaded once at most (it may still hold a slot), the policy never
    assert len({r.lora_int_id for r in vllm._slots.values()}) == len(vllm._slots) <= 3
    assert module.lora_rank(8) == 8 and module.lora_rank(9) == 16


def test_disabled_adapter_generates_from_the_base(lora, prompts):
    """Inside peft's disable_adapter() (judge:frozen) generation uses no adapter, as HF's does."""
    model, hf, vllm = lora
    with model.disable_adapter():
        base = vllm.generate(greedy(prompts))
        same_generations(base, hf.generate(greedy(prompts)))
    assert [g.completion_ids for g in base] != [g.completion_ids for g in vllm.generate(greedy(prompts))]


def test_seeded_requests_repeat(full, prompts):
    _, _, vllm = full
    reqs = [GenerationRequest(p, max_new_tokens=12, temperature=1.0, **_seed(7)) for p in prompts]
    if not _seed(7):
        pytest.skip("GenerationRequest has no seed field in this checkout")
    a = vllm.generate(reqs)
    b = vllm.generate(list(reversed(reqs)))[::-1]
    assert [g.completion_ids for g in a] == [g.completion_ids for g in b]


def _seed(value):
    import attrs

    return {"seed": value} if "seed" in attrs.fields_dict(GenerationRequest) else {}


def test_model_with_small_heads_is_refused(chat):
    tiny = load_model(TINY)
    with pytest.raises(ValueError, match="heads of >= 64 dims.*16"):
        VLLMBackend(tiny.model, chat)


def test_peft_base_export_strips_lora(lora, tmp_path):
    """The engine's base weights are the learner's base: no LoRA tensors, no base_layer names."""
    from safetensors.torch import load_file

    from rolekit.backends.vllm import export_base

    model, _, _ = lora
    export_base(copy.deepcopy(model), load_model(TINY).tokenizer, tmp_path / "base")
    keys = set(load_file(tmp_path / "base" / "model.safetensors"))
    assert keys and not any("lora_" in k or "base_layer" in k for k in keys)
    assert "model.layers.0.self_attn.q_proj.weight" in keys
