"""CUDA path check: the engine trains tiny-random on echo on a GPU (full fine-tuning and LoRA).

    python bench/cuda_engine_check.py     # needs a CUDA GPU
"""
import json, sys, time, torch
from rolekit.config import from_dict
from rolekit.engine import Trainer
from rolekit.plugins import Kernel
print("device", torch.cuda.get_device_name(0), "torch", torch.__version__, flush=True)
for lora, dtype_note in ((False, "full FT"), (True, "LoRA")):
    data = {"seed": 0, "model": {"name": "tiny-random", "device": "cuda"},
            "lora": {"enabled": lora, "r": 8, "alpha": 16},
            "rollout": {"samples_per_step": 64, "max_new_tokens": 4, "concurrency": 64},
            "algorithm": {"steps": 15, "lr": 1e-2 if not lora else 3e-3, "recompute_logprobs": True},
            "eval": {"every": 0}, "checkpoint": {"every": 0},
            "curriculum": [{"game": "echo", "options": {"letters": "A"}}]}
    t = time.perf_counter()
    tr = Trainer(from_dict(data), f"/tmp/gpu-{lora}", kernel=Kernel(load_entrypoints=False), quiet=True)
    hist = tr.run()
    print(dtype_note, "dtype", next(tr.policy.model.parameters()).dtype, "seconds", round(time.perf_counter() - t, 1),
          "returns", [round(m["roles"]["echo/speaker"]["mean_return"], 2) for m in hist], flush=True)
