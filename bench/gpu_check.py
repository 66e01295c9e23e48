"""GPU check for issue #11 items 3 and 8: fp32 master weights and recomputed logprobs on CUDA.

For each model and each precision setup it measures:

(a) ``changed_fraction``: the fraction of weights one full fine-tuning AdamW step at lr 1e-5
    changes. ``fp32_master``: fp32 weights and AdamW state, forward passes under bf16
    autocast (what ``load_model(finetune="full")`` + the learner do on CUDA). ``bf16``: the
    weights themselves in bf16, no autocast (the old behaviour: ~2 % on SmolLM2-135M).
(b) ``logprob_diff_max`` / ``logprob_diff_mean``: |generation logprob - the learner's
    recomputed logprob| over the sampled tokens, which is why ``recompute_old_logprobs``
    defaults to true on CUDA.

Prints one JSON line. Needs a CUDA GPU; ``--device cpu`` runs the same code as a smoke test.

    python bench/gpu_check.py                # tiny-random
    python bench/gpu_check.py --embedded     # and the embedded SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import json
import time

import torch

PROMPTS = ["Hi", "What is the capital of France? Answer in one word.", "Count: 1 2 3", "Tell me a story.",
           "You hold the King. Bet or check?", "Name a prime number.", "Write a haiku about rain.", "2 + 2 ="]


def setups() -> dict[str, dict]:
    """Precision setups: how the model is loaded and whether forward passes autocast."""
    return {"fp32_master": dict(load=dict(finetune="full"), autocast_bf16=None),  # None: on CUDA
            "bf16": dict(load=dict(dtype=torch.bfloat16), autocast_bf16=False)}


def rollout(backend, chat, n: int, max_new_tokens: int, seed: int):
    """``n`` samples at temperature 1, advantages of both signs, logprobs from generation."""
    from rolekit.types import GenerationRequest, Sample

    requests = [GenerationRequest(chat.encode(PROMPTS[i % len(PROMPTS)]), max_new_tokens=max_new_tokens,
                                  temperature=1.0) for i in range(n)]
    torch.manual_seed(seed)
    generations = backend.generate(requests)
    return [Sample(game="check", role="r", prompt_ids=r.prompt_ids, completion_ids=g.completion_ids,
                   logprobs=g.logprobs, advantage=1.0 if i % 2 else -1.0)
            for i, (r, g) in enumerate(zip(requests, generations)) if g.completion_ids]


def logprob_diff(model, samples, device, autocast_bf16) -> dict[str, float]:
    """|generation logprobs - a learner pass| over every sampled token."""
    from rolekit.backends.hf import autocast
    from rolekit.learner import pad_old_logprobs, policy_logprobs

    with torch.no_grad(), autocast(device, autocast_bf16):
        logp, mask, _ = policy_logprobs(model, samples, device)
    diff = (logp - pad_old_logprobs(samples, logp.shape[1], device)).abs()[mask]
    return {"logprob_diff_max": diff.max().item(), "logprob_diff_mean": diff.mean().item()}


def one_step(model, samples, device, autocast_bf16, max_new_tokens: int) -> dict[str, float]:
    """One AdamW step at lr 1e-5 over ``samples``: the fraction of weights it changed."""
    from rolekit.config import AlgorithmConfig
    from rolekit.learner import Learner

    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    learner = Learner(model, params, AlgorithmConfig(lr=1e-5, recompute_logprobs=True), device=device,
                      autocast_bf16=autocast_bf16)
    start = time.perf_counter()
    learner.step(samples, max_new_tokens)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    changed = sum((b != p.detach()).sum().item() for b, p in zip(before, params))
    return {"changed_fraction": changed / sum(b.numel() for b in before), "step_seconds": round(seconds, 3),
            "param_dtype": str(params[0].dtype)}


def check(name: str, setup: dict, args) -> dict:
    from rolekit.backends.hf import HFBackend
    from rolekit.chat import ChatTokenizer
    from rolekit.models import load_model

    loaded = load_model(name, device=args.device, **setup["load"])
    model = loaded.model.requires_grad_(True)
    chat = ChatTokenizer(loaded.tokenizer)
    backend = HFBackend(model, chat, max_batch_size=64, autocast_bf16=setup["autocast_bf16"])
    samples = rollout(backend, chat, args.samples, args.max_new_tokens, args.seed)
    out = logprob_diff(model, samples, loaded.device, setup["autocast_bf16"])
    out.update(one_step(model, samples, loaded.device, setup["autocast_bf16"], args.max_new_tokens))
    out["samples"], out["tokens"] = len(samples), sum(len(s.completion_ids) for s in samples)
    return out


def lora_dtypes(name: str, device: str) -> dict[str, str]:
    """A LoRA model as the engine builds it: the base in the device's default, the adapter fp32."""
    import peft

    from rolekit.models import load_model

    model = peft.get_peft_model(load_model(name, device=device, finetune="lora").model,
                                peft.LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    trainable = {str(p.dtype) for p in model.parameters() if p.requires_grad}
    frozen = {str(p.dtype) for p in model.parameters() if not p.requires_grad}
    return {"adapter": ",".join(sorted(trainable)), "base": ",".join(sorted(frozen))}


def main() -> None:
    import transformers

    from rolekit.learner import recompute_old_logprobs
    from rolekit.models import EMBEDDED, TINY

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--embedded", action="store_true", help=f"also check {EMBEDDED}")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --device cpu for a smoke test")

    names = [TINY, EMBEDDED] if args.embedded else [TINY]
    result = {"bench": "gpu_check", "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda")
              else args.device, "torch": torch.__version__, "transformers": transformers.__version__,
              "recompute_default": recompute_old_logprobs(None, args.device), "models": {}}
    for name in names:
        result["models"][name] = {label: check(name, setup, args) for label, setup in setups().items()}
        result["models"][name]["lora_dtypes"] = lora_dtypes(name, args.device)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
