"""rolekit export on a real checkpoint: how long the merge takes, and whether plain
transformers and vLLM, loading the exported directory without rolekit, generate the
greedy tokens rolekit's policy generates from the checkpoint.

    python bench/export.py runs/azr_s0/checkpoints/step-20 [--vllm-python .venv-vllm/bin/python]

Prints one JSON line: export seconds, directory size, and per loader the share of prompts
whose greedy tokens equal rolekit's (and the first token where one differs). vLLM's CPU
build runs in its own venv (``make setup-vllm``); it is asked only when --vllm-python is
given.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = [
    [{"role": "user", "content": "What is 17 + 25? Answer with the number."}],
    [{"role": "user", "content": "Write a Python function f that returns its input reversed."}],
    [{"role": "user", "content": "You hold the King in Kuhn Poker. Do you bet or check?"}],
    [{"role": "user", "content": "Name three colours."}],
]

PLAIN = """
import json, sys
from transformers import AutoModelForCausalLM
path, prompts, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
model = AutoModelForCausalLM.from_pretrained(path)
import torch
out = []
for ids in prompts:
    seq = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=n, do_sample=False)
    out.append(seq[0, len(ids):].tolist())
assert not any(m.split(".")[0] == "rolekit" for m in sys.modules)
print(json.dumps(out))
"""

VLLM = """
import json, os, sys
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    path, prompts, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    llm = LLM(model=path, dtype="float32", enforce_eager=True, kv_cache_memory_bytes=1 << 30)
    outs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], SamplingParams(temperature=0, max_tokens=n))
    assert not any(m.split(".")[0] == "rolekit" for m in sys.modules)
    print(json.dumps([list(o.outputs[0].token_ids) for o in outs]))
"""


def _first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two token lists differ (one ending early counts), or None."""
    if a == b:
        return None
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _agreement(reference: list[list[int]], other: list[list[int]]) -> dict:
    firsts = [_first_difference(a, b) for a, b in zip(reference, other)]
    return {"equal": sum(f is None for f in firsts) / len(firsts), "first_difference": firsts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a run directory or checkpoint (a LoRA adapter or a full model)")
    parser.add_argument("--tokens", type=int, default=32, help="greedy tokens per prompt")
    parser.add_argument("--vllm-python", help="a python with vLLM (e.g. .venv-vllm/bin/python)")
    args = parser.parse_args()

    from rolekit.backends.hf import HFBackend
    from rolekit.export import export, resolve
    from rolekit.models import load_model
    from rolekit.types import GenerationRequest

    ckpt, _ = resolve(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "merged"
        start = time.perf_counter()
        export(args.checkpoint, out, merge=True)
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in out.iterdir())

        loaded = load_model(str(ckpt))
        ids = [list(loaded.tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True,
                                                         return_dict=True)["input_ids"]) for m in PROMPTS]
        gens = HFBackend(loaded.model, loaded.tokenizer).generate(
            [GenerationRequest(p, max_new_tokens=args.tokens, temperature=0.0) for p in ids])
        reference = [list(g.completion_ids) for g in gens]

        result = {"checkpoint": str(ckpt), "export_s": round(seconds, 1), "export_mb": round(size / 1e6, 1),
                  "prompts": len(PROMPTS), "tokens": args.tokens}
        loaders = {"transformers": (sys.executable, PLAIN)}
        if args.vllm_python:
            loaders["vllm"] = (os.path.abspath(args.vllm_python), VLLM)  # not resolve(): a venv python is a link
        for name, (python, script) in loaders.items():
            done = subprocess.run([python, "-c", script, str(out), json.dumps(ids), str(args.tokens)],
                                  capture_output=True, text=True, cwd=tmp)
            if done.returncode != 0:
                result[name] = {"error": done.stderr.strip().splitlines()[-1:]}
                continue
            result[name] = _agreement(reference, json.loads(done.stdout.strip().splitlines()[-1]))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
