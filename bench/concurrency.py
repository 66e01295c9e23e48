"""Episodes/s with C games in flight on one backend; C = 1 is SPIRAL's actor loop.

SPIRAL's actors play one game at a time, so each generate call carries one prompt.
rolekit's Scheduler keeps C episodes alive and answers all their pending asks in one
batched call. This plays Kuhn Poker self-play (the policy in both seats) through the
same Scheduler at C = 1, 8, 32, 64 -- interleaved round by round -- and reports
episodes/s at each C relative to C = 1.

It also reports the tokens the model processed (prompt + generated) per second, the
matmul rate they imply (2 x parameters FLOPs a token), and what a plain matmul of the
model's widths reaches on this machine: on a CPU the prompts' prefill (most of the
processed tokens: a terse Kuhn answer is ~5 tokens after a ~100-token prompt) is
already a batched matmul at C = 1, so batching games can only raise that rate to the
machine's ceiling -- on 2 cores that is less than 2x, whatever C is.

    python bench/concurrency.py --quick
    python bench/concurrency.py                  # full: embedded model
    python bench/concurrency.py --device cuda --model <HF dir>

value = episodes/s at C = 64 / episodes/s at C = 1; goal 8.
"""

from __future__ import annotations

import torch

from harness import default_model, emit, median, options, ratio, say, setup, side_by_side

GOAL = 8.0


def matmul_gflops(model, device: str, rows: int = 2048) -> float:
    """What this machine's matmuls reach at the model's widths: (rows x hidden) @ (hidden x
    intermediate), the shape of a batched prefill's MLP -- the ceiling batching can approach."""
    import time

    from harness import sync

    config = model.config
    hidden = config.hidden_size
    inner = getattr(config, "intermediate_size", 4 * hidden)
    dtype = next(model.parameters()).dtype
    a = torch.randn(rows, hidden, device=device, dtype=dtype)
    b = torch.randn(hidden, inner, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 1.0:
        a @ b
        n += 1
    sync(device)
    return 2 * rows * hidden * inner * n / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = options(__doc__.splitlines()[0])
    parser.add_argument("--game", default="kuhn_poker")
    parser.add_argument("--concurrency", default="1,8,32,64", help="comma-separated values of C")
    parser.add_argument("--episodes", default=None,
                        help="episodes per round for each C, comma-separated (default: 2C, at least 8; quick: C, "
                             "at least 4)")
    args = parser.parse_args()
    info = setup(args)
    model_name = default_model(args)
    repeats = args.repeats or (2 if args.quick else 3)
    levels = [int(c) for c in args.concurrency.split(",")]
    if args.episodes:
        counts = [int(e) for e in args.episodes.split(",")]
    else:
        counts = [max(c, 4) if args.quick else max(2 * c, 8) for c in levels]

    from rolekit.backends.hf import HFBackend
    from rolekit.chat import ChatTokenizer
    from rolekit.models import load_model
    from rolekit.plugins import Kernel
    from rolekit.rollout import make_game, specs
    from rolekit.table import POLICY, ModelResponder, Scheduler

    loaded = load_model(model_name, device=args.device)
    n_params = sum(p.numel() for p in loaded.model.parameters())
    chat = ChatTokenizer(loaded.tokenizer)
    backend = HFBackend(loaded.model, chat, max_batch_size=max(levels))
    responder = ModelResponder(POLICY, backend, chat, temperature=1.0)
    kernel = Kernel()
    game = make_game(kernel, args.game)
    stats: dict[int, dict[str, float]] = {}

    def contender(c: int, episodes: int):
        def run() -> float:
            torch.manual_seed(args.seed)
            calls, generated = backend.calls, backend.tokens_generated
            scheduler = Scheduler({POLICY: responder}, kernel=kernel, concurrency=c)
            played = list(scheduler.run(specs(game, episodes, args.seed, {})))
            assert all(e.ok for e in played), [e.error for e in played if e.error]
            turns = [t for e in played for t in e.turns]
            stats[c] = {
                "episodes": episodes, "turns": len(turns), "generate_calls": backend.calls - calls,
                "generated_tokens": backend.tokens_generated - generated,
                "processed_tokens": sum(len(t.prompt_ids) + len(t.completion_ids) for t in turns),
            }
            return episodes
        return run

    peak = matmul_gflops(loaded.model, args.device)
    say(f"matmul rate of this machine at the model's widths: {peak:.1f} GFLOP/s")
    contenders = {f"C={c}": contender(c, n) for c, n in zip(levels, counts)}
    say(f"{game.name} self-play on {model_name}: C = {levels}, episodes {counts}, {repeats} rounds")
    contenders[f"C={levels[0]}"]()  # warm-up
    rates = side_by_side(contenders, repeats, device=args.device, log=say)
    per_c = {}
    base = f"C={levels[0]}"
    for c in levels:
        r = rates[f"C={c}"]
        s = stats[c]
        eps = median(r)
        seconds = s["episodes"] / eps
        per_c[str(c)] = {
            **s, "episodes_per_s": eps, "speedup": ratio(r, rates[base]),
            "mean_batch": s["turns"] / max(s["generate_calls"], 1),
            "processed_tokens_per_s": s["processed_tokens"] / seconds,
            "gflops": 2 * n_params * s["processed_tokens"] / seconds / 1e9,
        }
        per_c[str(c)]["fraction_of_matmul_rate"] = per_c[str(c)]["gflops"] / peak
        say(f"C={c}: {per_c[str(c)]}")
    top = str(levels[-1])
    emit("concurrency", per_c[top]["speedup"], GOAL, f"episodes/s at C={top} / at C={levels[0]}",
         model=model_name, game=game.name, repeats=repeats, quick=args.quick, parameters=n_params,
         matmul_gflops=peak, processed_tokens_per_generated=stats[levels[0]]["processed_tokens"] /
         max(stats[levels[0]]["generated_tokens"], 1),
         by_concurrency=per_c, machine=info)


if __name__ == "__main__":
    main()
