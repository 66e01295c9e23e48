"""bf16 autocast on the CPU (``model.bf16 = true``) against fp32: training step seconds.

Two trainers built from one config (default examples/kuhn_poker.toml; evaluation
and checkpoints off), identical but for ``model.bf16``, run their steps
interleaved (the order alternating every round), so the load of a shared machine falls
on both alike. Each step's seconds are split into generation (the backend's ``generate``
and ``score``: constrained choices are scored) and learning (``Learner.step``, which under
bf16 takes its old logprobs from its own first pass, no extra pass). The first step of each is a warm-up.

Fast bf16 on a CPU needs AMX or AVX512-BF16 (``grep -o 'amx_bf16\\|avx512_bf16' /proc/cpuinfo``);
without them bf16 is slower than fp32, which is why ``model.bf16`` is off by default.

    python bench/bf16_cpu.py --quick                 # tiny-random, 3 steps
    python bench/bf16_cpu.py                         # the embedded default, Kuhn, 6 steps
    python bench/bf16_cpu.py --config examples/negotiation.toml --steps 4

value = fp32 step seconds / bf16 step seconds (median over steps); goal: above 1.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from harness import default_model, emit, median, options, say, setup
from vs_trl import Stopwatch, rolekit_one_step

ROOT = Path(__file__).resolve().parent.parent


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return sorted({f for f in ("amx_bf16", "avx512_bf16", "avx512f") if f" {f}" in text})


def trainer(config_path: Path, model: str, device: str, bf16: bool, steps: int, out: Path, seed: int):
    import attrs

    from rolekit.config import load
    from rolekit.engine import Trainer

    config = load(config_path)
    config = attrs.evolve(
        config, seed=seed, model=attrs.evolve(config.model, name=model, device=device, bf16=bf16),
        algorithm=attrs.evolve(config.algorithm, steps=steps),
        eval=attrs.evolve(config.eval, every=0), checkpoint=attrs.evolve(config.checkpoint, every=0))
    return Trainer(config, out, quiet=True)


def main() -> None:
    parser = options(__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "kuhn_poker.toml")
    parser.add_argument("--steps", type=int, default=None, help="steps of each, warm-up included")
    args = parser.parse_args()
    info = setup(args)
    model = default_model(args)
    steps = args.steps or (3 if args.quick else 6)
    out = Path(tempfile.mkdtemp(prefix="rolekit-bf16-"))
    trainers = {name: trainer(args.config, model, args.device, name == "bf16", steps, out / name, args.seed)
                for name in ("fp32", "bf16")}
    watches = {}
    for name, t in trainers.items():
        gen, learn = Stopwatch(args.device), Stopwatch(args.device)
        gen.wrap(t.policy.backend, "generate")
        gen.wrap(t.policy.backend, "score")
        learn.wrap(t.learner, "step")
        watches[name] = (gen, learn)
    seconds = {n: [] for n in trainers}
    split = {n: {"generate": [], "learn": []} for n in trainers}
    for step in range(steps):
        for name in (list(trainers) if step % 2 == 0 else list(trainers)[::-1]):
            m = rolekit_one_step(trainers[name])
            gen, learn = watches[name]
            seconds[name].append(m["seconds"])
            split[name]["generate"].append(gen.lap())
            split[name]["learn"].append(learn.lap())
            say(f"step {step + 1}/{steps} {name}: {m['seconds']:.2f} s ({split[name]['generate'][-1]:.2f} s "
                f"generating and scoring, {split[name]['learn'][-1]:.2f} s learning, {m['samples']} samples)")
    timed = {n: s[1:] for n, s in seconds.items()}
    ratios = [f / b for f, b in zip(timed["fp32"], timed["bf16"])]
    emit("bf16_cpu", median(ratios), 1.0, "fp32 step seconds / bf16 step seconds", config=str(args.config),
         model=model, steps=steps, cpu_flags=cpu_flags(),
         **{n: {"seconds_per_step": median(timed[n]), "generate_seconds": median(split[n]["generate"][1:]),
                "learn_seconds": median(split[n]["learn"][1:])} for n in trainers},
         generate_ratio=median([f / b for f, b in zip(split["fp32"]["generate"][1:], split["bf16"]["generate"][1:])]),
         learn_ratio=median([f / b for f, b in zip(split["fp32"]["learn"][1:], split["bf16"]["learn"][1:])]),
         step_ratios=ratios, machine=info)


if __name__ == "__main__":
    main()
