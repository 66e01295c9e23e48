"""Rollouts on Ray workers vs one process: Kuhn Poker self-play episodes per second.

Contenders, interleaved (``harness.side_by_side``), each playing the same episodes through
the Scheduler: ``one_process`` (the HF backend, global-RNG sampling, the default),
``seeded`` (the same with ``rollout.seeded_sampling``: the cost of per-request seeds) and
``ray`` (``RayBackend`` on ``--workers`` actors of a local Ray cluster, one CPU and torch
thread each). Also timed once: ``ray.init`` and the workers' start (each loads the model).

    python bench/distributed.py --quick          # tiny-random, 16 episodes
    python bench/distributed.py                  # the embedded default, 64 episodes
    python bench/distributed.py --choose         # constrained answers (score) instead of free text

value = ray episodes/s / one-process episodes/s. On this repository's 2-core machine the
workers share the cores the single process uses, so no gain is expected there; the figure
says what the split and the weight transport cost.
"""

from __future__ import annotations

import time

import torch

from harness import default_model, emit, median, options, ratio, say, setup, side_by_side


def main() -> None:
    parser = options(__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=None)
    parser.add_argument("--choose", action="store_true", help="the model picks among the legal answers")
    args = parser.parse_args()
    machine = setup(args)
    episodes = args.episodes or (16 if args.quick else 64)
    repeats = args.repeats or (2 if args.quick else 3)

    import ray
    import rolekit_games

    from rolekit.config import from_dict
    from rolekit.distributed.rollout import RayBackend
    from rolekit.engine import Policy
    from rolekit.plugins import Kernel
    from rolekit.rollout import make_game, specs
    from rolekit.table import Scheduler

    config = from_dict({"seed": args.seed, "model": {"name": default_model(args), "device": args.device},
                        "rollout": {"max_new_tokens": 4, "concurrency": 64},
                        "distributed": {"rollout_workers": args.workers},
                        "curriculum": [{"game": "kuhn_poker", "options": {"choose": args.choose}}]})
    kernel = Kernel([rolekit_games], load_entrypoints=False)
    game = make_game(kernel, "kuhn_poker", {"choose": args.choose})
    policy = Policy(config)

    start = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    ray_init = time.perf_counter() - start
    remote = RayBackend(config, policy.model, policy.params)
    workers_start = remote.startup_seconds

    def play(backend, seeded: bool):
        def run() -> float:
            responder = policy.responder()
            responder.backend, responder.seeded = backend, seeded
            done = list(Scheduler({"policy": responder}, kernel=kernel, concurrency=64).run(
                specs(game, episodes, args.seed, {}, alternate=True)))
            return len(done)
        return run

    torch.manual_seed(args.seed)
    play(remote, True)()  # the first call sends the weights: not part of a round
    rates = side_by_side({"one_process": play(policy.backend, False), "seeded": play(policy.backend, True),
                          "ray": play(remote, True)}, repeats, device=args.device, log=say)
    remote.close()
    ray.shutdown()
    emit("distributed" + ("-choose" if args.choose else ""), ratio(rates["ray"], rates["one_process"]), 1.0,
         "ray episodes/s / one-process episodes/s", episodes_per_s={k: median(v) for k, v in rates.items()},
         seeded_vs_unseeded=ratio(rates["seeded"], rates["one_process"]), ray_init_s=ray_init,
         workers_start_s=workers_start, workers=args.workers, episodes=episodes, rounds=repeats,
         model=config.model.name, machine=machine)


if __name__ == "__main__":
    main()
