"""Per-rank memory of the torchrun learner: "ddp" (every rank holds the whole AdamW state)
vs "zero" (``distributed.learner = "zero"``: each rank holds 1/N of it and of the gradient)
vs "fsdp" (``"fsdp"``: each rank holds 1/N of the weights too; rank 0 also a whole copy to play with).

    torchrun --standalone --nproc_per_node 2 bench/zero_memory.py --learner ddp
    torchrun --standalone --nproc_per_node 2 bench/zero_memory.py --learner zero
    torchrun --standalone --nproc_per_node 2 bench/zero_memory.py --learner fsdp
    python bench/zero_memory.py                 # one process, for reference
    ... --quick                                 # tiny-random instead of the embedded default

Full fine-tuning (fp32 weights) of the model on one batch of random token ids (8 samples,
64-token prompts, 16-token completions, one micro-batch per sample), two optimizer steps
(the first creates AdamW's moments). Per rank: the bytes of AdamW's moments it holds, and
the peak resident memory during the two steps above the resident memory before them
(``VmHWM`` reset through ``/proc/self/clear_refs``): AdamW's state, gradients, reduction
buffers and activations. The weights themselves, loaded before, are not in that figure;
``resident_before_mib`` is the process's whole resident memory before the steps (python,
torch, the weights as this learner holds them: whole, or fsdp's slices and rank 0's copy).
value = rank 0's peak increase in MiB (memory, not time: the machine's load does not move it
much, its allocator does; run each twice).
"""

from __future__ import annotations

import random

from harness import default_model, emit, options, setup


def _peak_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def main() -> None:
    parser = options(__doc__.splitlines()[0])
    parser.add_argument("--learner", choices=("ddp", "zero", "fsdp"), default="ddp", help="distributed.learner under torchrun")
    args = parser.parse_args()
    machine = setup(args)

    from rolekit.config import AlgorithmConfig
    from rolekit.distributed.learner import DataParallel, serve
    from rolekit.learner import Learner
    from rolekit.models import load_model
    from rolekit.types import Sample

    name = default_model(args)
    dp = DataParallel.from_env(learner=args.learner)
    model = load_model(name, finetune="full").model.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    learner_class = Learner if dp is None else dp.learner_class
    learner = learner_class(model, params, AlgorithmConfig(lr=1e-5, micro_batch_tokens=1), device="cpu",
                            data_parallel=dp)
    rng = random.Random(args.seed)
    vocab = model.config.vocab_size
    batch = [Sample(game="g", role="a", prompt_ids=tuple(rng.randrange(vocab) for _ in range(64)),
                    completion_ids=(c := tuple(rng.randrange(vocab) for _ in range(16))),
                    logprobs=tuple(-5.0 for _ in c), advantage=rng.uniform(-1, 1), max_new_tokens=16)
             for _ in range(8)]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    before = _rss_kib()
    if dp is None or dp.rank == 0:
        for _ in range(2):
            learner.step(batch, 16)
        if dp is not None:
            dp.stop()
    else:
        serve(learner)  # the other ranks take rank 0's batches, as under rolekit train
    peak = (_peak_kib() - before) / 1024
    moments = sum((v.to_local() if hasattr(v, "to_local") else v).numel() * v.element_size()
                  for entries in learner.optimizer.state.values() for k, v in entries.items() if k != "step")
    weights = sum(p.numel() * p.element_size() for p in params) / 2**20
    record = {"peak_increase_mib": round(peak, 1), "adamw_moments_mib": round(moments / 2**20, 1),
              "resident_before_mib": round(before / 1024, 1)}
    ranks = [record]
    if dp is not None:
        import torch.distributed as dist

        ranks = [None] * dp.world_size
        dist.all_gather_object(ranks, record)
        if dp.rank > 0:
            return
    emit(f"zero_memory_{args.learner if dp else 'one_process'}", ranks[0]["peak_increase_mib"], 0.0, "MiB",
         model=name, learner=args.learner if dp else "one process", ranks=len(ranks),
         trained_weights_mib=round(weights, 1), per_rank=ranks, machine=machine)


if __name__ == "__main__":
    main()
