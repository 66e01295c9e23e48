"""The backend's lean LoRA view (``rolekit.backends.lora``): the same values as peft, the same
weights, kept up to date, and peft itself wherever the view cannot be exact."""

from __future__ import annotations

import peft
import pytest
import torch

from rolekit.backends.hf import HFBackend, autocast
from rolekit.backends.lora import LeanLoRA
from rolekit.chat import ChatTokenizer
from rolekit.models import TINY, load_model
from rolekit.types import GenerationRequest

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_model(dtype=torch.float32, **kw):
    torch.manual_seed(0)
    lm = load_model(TINY, dtype=dtype)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False, **kw)
    return peft.get_peft_model(lm.model, config).eval(), ChatTokenizer(lm.tokenizer)


IDS = torch.tensor([[5, 17, 300, 42, 9, 1000, 77, 3]])


def logits(model, bf16=False):
    with torch.inference_mode(), autocast("cpu", bf16):
        return model(input_ids=IDS).logits.float()


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_the_view_gives_peft_s_values_bit_for_bit_and_shares_its_weights(bf16):
    model, _ = lora_model(torch.bfloat16 if bf16 else torch.float32)
    view = LeanLoRA(model).model(torch.bfloat16 if bf16 else None)
    assert view is not model and not any(isinstance(m, peft.tuners.tuners_utils.BaseTunerLayer) for m in view.modules())
    assert torch.equal(logits(view, bf16), logits(model, bf16))
    ours = {t.data_ptr() for t in view.parameters()}
    assert {p.data_ptr() for n, p in model.named_parameters() if "lora_" not in n} <= ours  # no copy of the base


def test_the_view_follows_in_place_updates_of_the_adapter():
    model, _ = lora_model(torch.bfloat16)
    lean = LeanLoRA(model)
    before = logits(lean.model(torch.bfloat16), True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-1)
    with autocast("cpu", True):
        model(input_ids=IDS).logits.float().logsumexp(-1).sum().backward()
    optimizer.step()  # in place: the view's bf16 casts of A and B must be refreshed
    after = logits(lean.model(torch.bfloat16), True)
    assert not torch.equal(after, before)
    assert torch.equal(after, logits(model, True))
    with torch.no_grad():  # a snapshot or checkpoint copied in (Policy.using, load_checkpoint)
        for p in params:
            p.mul_(0.5)
    assert torch.equal(logits(lean.model(torch.bfloat16), True), logits(model, True))


def test_peft_itself_where_the_view_would_not_be_exact():
    model, _ = lora_model()
    lean = LeanLoRA(model)
    view = lean.model()
    assert view is not model
    with model.disable_adapter():  # the reference policy, judge:frozen: the base alone
        assert lean.model() is model
        assert torch.equal(logits(lean.model()), logits(load_model(TINY).model))
    assert lean.model() is view  # the same view again, not rebuilt
    assert torch.equal(logits(view), logits(model))
    plain = load_model(TINY).model
    assert LeanLoRA(plain).model() is plain  # full fine-tuning: no adapter
    dora, _ = lora_model(use_dora=True)
    assert LeanLoRA(dora).model() is dora  # a LoRA variant the view does not mirror


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_backend_generates_the_same_tokens_and_logprobs_through_the_view(bf16):
    model, chat = lora_model(torch.bfloat16 if bf16 else torch.float32)
    prompts = [chat.encode("Say something."), chat.encode("Name a move: bet or check?")]
    requests = [GenerationRequest(p, max_new_tokens=8, temperature=1.0, seed=i) for i, p in enumerate(prompts * 3)]
    lean = HFBackend(model, chat, autocast_bf16=bf16)
    plain = HFBackend(model, chat, autocast_bf16=bf16, lean_lora=False)
    assert lean.inference_model() is not model and plain.inference_model() is model
    a, b = lean.generate(requests), plain.generate(requests)
    assert [g.completion_ids for g in a] == [g.completion_ids for g in b]
    assert [g.logprobs for g in a] == [g.logprobs for g in b]
    pairs = [(r.prompt_ids, g.completion_ids) for r, g in zip(requests, a)]
    assert lean.score(pairs) == plain.score(pairs)
