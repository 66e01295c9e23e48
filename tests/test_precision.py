"""Mixed precision (issue #11, items 3 and 8): fp32 master weights, bf16 autocast on CUDA.

There is no GPU here, so the CUDA decisions are tested as functions, and the mechanism
(fp32 parameters and optimizer state, forward passes under bf16 autocast) runs on the CPU
with autocast switched on explicitly (``torch.autocast("cpu", dtype=torch.bfloat16)``).
"""

from __future__ import annotations

import random

import peft
import pytest
import torch

from rolekit import models
from rolekit.backends.hf import HFBackend, autocast
from rolekit.learner import completion_logprobs
from rolekit.chat import ChatTokenizer
from rolekit.config import AlgorithmConfig
from rolekit.models import TINY, load_model
from rolekit.types import GenerationRequest, Sample


class DtypeSpy:
    """Records the dtype of every output of one module (a linear layer inside the decoder)."""

    def __init__(self, model):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.seen: set[torch.dtype] = set()
        self.handle = base.model.layers[0].self_attn.q_proj.register_forward_hook(
            lambda module, args, out: self.seen.add(out.dtype))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def samples(n=6, seed=0):
    """Free-text samples on tiny-random prompts, advantages of both signs."""
    chat = ChatTokenizer(models.load_tokenizer(TINY))
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = chat.encode(f"Question {i}: say something.")
        completion = tuple(rng.randrange(100, 5000) for _ in range(3))
        out.append(Sample(game="g", role="r", prompt_ids=prompt, completion_ids=completion,
                          logprobs=(-1.0,) * 3, advantage=1.0 if i % 2 else -1.0))
    return out


def fraction_changed(before: list[torch.Tensor], params) -> float:
    changed = sum((b != p.detach()).sum().item() for b, p in zip(before, params))
    return changed / sum(b.numel() for b in before)


def one_step(model, **learner_kw) -> tuple[float, set[torch.dtype]]:
    """One full fine-tuning AdamW step at lr 1e-5: (fraction of weights changed, forward dtypes seen)."""
    from rolekit.learner import Learner

    model.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    learner = Learner(model, params, AlgorithmConfig(lr=1e-5, recompute_logprobs=True), device="cpu", **learner_kw)
    with DtypeSpy(model) as spy:
        learner.step(samples(), max_new_tokens=3)
    assert all(p.dtype == b.dtype for p, b in zip(params, before))
    assert all(state["exp_avg_sq"].dtype == p.dtype for p, state in learner.optimizer.state.items())  # AdamW's too
    return fraction_changed(before, params), spy.seen


# --------------------------------------------------------------------------- the dtype decision


def test_training_dtype_keeps_an_fp32_master_copy_for_full_fine_tuning():
    from rolekit.models import training_dtype

    assert training_dtype("cuda", lora=False) == torch.float32  # AdamW on fp32 weights, bf16 autocast
    assert training_dtype(torch.device("cuda:1"), lora=True) == torch.bfloat16  # frozen base; adapter in fp32
    assert training_dtype("cpu", lora=False) == training_dtype("cpu", lora=True) == torch.float32


def test_load_model_for_full_fine_tuning_is_fp32_where_the_default_is_bf16(monkeypatch):
    monkeypatch.setattr(models, "_default_dtype", lambda device: torch.bfloat16)  # what CUDA gets
    assert load_model(TINY).model.dtype == torch.bfloat16  # inference (evaluation, a frozen reference)
    assert load_model(TINY, finetune="full").model.dtype == torch.float32
    assert load_model(TINY, finetune="lora").model.dtype == torch.bfloat16
    assert load_model(TINY, finetune="full", dtype=torch.bfloat16).model.dtype == torch.bfloat16  # explicit wins
    with pytest.raises(ValueError, match="finetune"):
        load_model(TINY, finetune="qlora")


def test_lora_adapters_on_a_bf16_base_are_fp32():
    base = load_model(TINY, dtype=torch.bfloat16).model
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert all(p.dtype == torch.bfloat16 for p in frozen)


def test_mixed_precision_is_on_for_cuda_only():
    from rolekit.backends.hf import autocast, mixed_precision

    assert mixed_precision("cuda") and mixed_precision(torch.device("cuda", 0))
    assert not mixed_precision("cpu")
    with autocast("cpu"):  # the default on the CPU: a no-op
        assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", enabled=True):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


# --------------------------------------------------------------------------- the learner


def test_one_adamw_step_moves_fp32_master_weights_under_autocast_but_barely_bf16_weights():
    """SmolLM2-135M on CUDA: one step at lr 1e-5 changed 2 % of bf16 weights (fp32: ~100 %).
    AdamW's first update is ~lr per weight, far below a bf16 weight's resolution (2^-8 of it)."""
    master, seen = one_step(load_model(TINY).model, autocast_bf16=True)
    assert seen == {torch.bfloat16}  # the forward passes ran in bf16 ...
    assert master > 0.9, master  # ... and the fp32 weights all moved
    pure, seen = one_step(load_model(TINY, dtype=torch.bfloat16).model, autocast_bf16=False)
    assert seen == {torch.bfloat16}
    assert pure < 0.2, pure


def test_learner_on_the_cpu_runs_fp32_by_default():
    changed, seen = one_step(load_model(TINY).model)
    assert seen == {torch.float32} and changed > 0.9


# --------------------------------------------------------------------------- the backend


def test_backend_generates_and_scores_under_autocast_when_asked():
    lm = load_model(TINY)
    chat = ChatTokenizer(lm.tokenizer)
    request = GenerationRequest(chat.encode("Hello there"), max_new_tokens=4, temperature=1.0)
    for enabled, dtype in ((None, torch.float32), (True, torch.bfloat16)):  # None: the device's default
        backend = HFBackend(lm.model, chat, autocast_bf16=enabled)
        with DtypeSpy(lm.model) as spy:
            torch.manual_seed(0)
            [g] = backend.generate([request])
        assert spy.seen == {dtype}
        with DtypeSpy(lm.model) as spy:
            [scored] = backend.score([(request.prompt_ids, g.completion_ids)])
        assert spy.seen == {dtype}
        assert all(lp <= 0 for lp in g.logprobs + scored)
        assert scored == pytest.approx(g.logprobs, abs=0.1 if enabled else 1e-4)


# --------------------------------------------------------------------------- recompute (item 8, CUDA part)


def test_old_logprobs_are_recomputed_by_default_where_forward_passes_run_in_bf16():
    from rolekit.learner import recompute_old_logprobs

    assert recompute_old_logprobs(None, "cuda") is True  # bf16 generation logprobs differ from the learner's
    assert recompute_old_logprobs(None, torch.device("cpu")) is False  # fp32: they agree to 1e-5
    assert recompute_old_logprobs(None, "cpu", True) is True  # model.bf16 = true on the CPU
    assert recompute_old_logprobs(None, "cuda", False) is False
    assert recompute_old_logprobs(True, "cpu") is True
    assert recompute_old_logprobs(False, "cuda") is False
    assert recompute_old_logprobs(False, "cpu", True) is False


def test_model_bf16_trains_under_autocast_on_the_cpu(tmp_path, monkeypatch):
    """``model.bf16 = true``: rollout and learner run their matmuls in bf16 (AMX on a recent
    Xeon), old logprobs are recomputed, the weights stay fp32, and the echo task is learned."""
    from rolekit import engine
    from tests.test_engine import ECHO, mean_return, train

    seen = {}
    run = engine.Trainer.run

    def spied_run(trainer):
        seen.update(backend=trainer.policy.backend.autocast_bf16, recompute=trainer.learner.recompute)
        with DtypeSpy(trainer.policy.model) as spy:
            out = run(trainer)
        seen["dtypes"] = spy.seen
        return out

    monkeypatch.setattr(engine.Trainer, "run", spied_run)
    trainer, history = train(tmp_path, {**ECHO, "model": {"name": "tiny-random", "bf16": True}})
    assert seen == {"backend": True, "recompute": True, "dtypes": {torch.bfloat16}}
    assert {p.dtype for p in trainer.policy.params.values()} == {torch.float32}
    assert mean_return(history, 3) > 0.8, [m["roles"]["echo/speaker"]["mean_return"] for m in history]


def test_learner_keeps_lora_inputs_in_bf16_under_autocast_with_the_same_values_and_gradients():
    """Under autocast the learner turns off peft's cast of each LoRA layer's input to the fp32
    adapter dtype (a copy per layer, forward and backward): autocast runs those matmuls in
    bf16 either way, so the loss and the adapter's gradients are the same bit for bit."""
    from rolekit.config import AlgorithmConfig
    from rolekit.learner import Learner, _keep_input_dtype

    torch.manual_seed(0)
    base = load_model(TINY, dtype=torch.bfloat16).model
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                                      init_lora_weights=False))
    params = [p for p in model.parameters() if p.requires_grad]
    batch = samples()

    def loss_and_grads(keep: bool):
        model.zero_grad()
        with autocast("cpu", True), _keep_input_dtype(model, keep):
            logp, mask, _ = completion_logprobs(model, batch, "cpu")
        loss = logp[mask].sum()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in params]

    (a, grads_a), (b, grads_b) = loss_and_grads(True), loss_and_grads(False)
    assert torch.equal(a, b) and all(torch.equal(x, y) for x, y in zip(grads_a, grads_b))

    seen = []
    layer = next(m for m in model.modules() if isinstance(m, peft.tuners.lora.Linear))
    layer.register_forward_hook(lambda module, args, out: seen.append((args[0].dtype, module.cast_input_dtype_enabled)))
    Learner(model, params, AlgorithmConfig(lr=1e-5), device="cpu", autocast_bf16=True).step(batch, max_new_tokens=3)
    assert seen and all(s == (torch.bfloat16, False) for s in seen)
    assert layer.cast_input_dtype_enabled  # restored after the step


def test_learner_runs_the_math_attention_kernel_on_the_cpu_under_bf16_only():
    """CPU flash attention's bf16 backward is slow on the learner's short shapes: under bf16
    on the CPU the learner's passes run the math SDPA kernel; fp32 leaves torch's choice."""
    from rolekit.config import AlgorithmConfig
    from rolekit.learner import Learner

    torch.manual_seed(0)
    model = peft.get_peft_model(load_model(TINY, dtype=torch.bfloat16).model,
                                peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    params = [p for p in model.parameters() if p.requires_grad]
    seen = []
    attention = model.get_base_model().model.layers[0].self_attn
    attention.register_forward_pre_hook(
        lambda module, args: seen.append(torch._C._get_flash_sdp_enabled() or torch._C._get_mem_efficient_sdp_enabled()))
    Learner(model, params, AlgorithmConfig(lr=1e-5), device="cpu", autocast_bf16=True).step(samples(), max_new_tokens=3)
    assert seen and not any(seen)  # only the math kernel allowed
    seen.clear()
    Learner(model, params, AlgorithmConfig(lr=1e-5), device="cpu", autocast_bf16=False).step(samples(), max_new_tokens=3)
    assert seen and all(seen)
