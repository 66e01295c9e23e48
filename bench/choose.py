"""Constrained-choice scoring: one prompt pass shared by the k legal answers, vs k full passes.

With ``choose = true`` (the Kuhn and TicTacToe training examples) the model picks among
a decision's legal answers by its own likelihood of each, so every decision is scored by
teacher forcing. A profile of the TicTacToe example's rollout showed this scoring as the
slowest path in training: the first version ran prompt + answer once per legal answer,
recomputing the same prompt k times (k = 2 in Kuhn Poker, up to 9 in TicTacToe).
``rolekit.backends.hf.teacher_forced`` now runs each distinct prompt once into a KV cache
and the k answers against it; and a batch of prompts runs their shared header (chat
template + rules, about half of a TicTacToe prompt) once (``header_once_ratio``: against
the same pass computing the header per prompt).

This plays episodes of each game with the policy choosing, records the (prompt, answer)
pairs the backend was asked to score, and scores them side by side both ways
(``teacher_forced(share=True)`` and ``share=False``, the first version's single padded
pass per pair), checking that both give the same log-probabilities. By default rolekit
shares on the CPU only (``backends.hf.share_prompts``): on a GPU these small batches are
latency-bound and the second pass costs more than the tokens it saves.

    python bench/choose.py --quick
    python bench/choose.py                        # full: embedded model
    python bench/choose.py --device cuda --model <HF dir>

value = min over games of (pairs/s now) / (pairs/s with full passes); goal 1.5.
"""

from __future__ import annotations

import torch

from harness import default_model, emit, median, options, ratio, say, setup, side_by_side

GAMES = ("kuhn_poker", "tictactoe")
GOAL = 1.5


def main() -> None:
    parser = options(__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=None, help="episodes per game (default 8; quick 4)")
    args = parser.parse_args()
    info = setup(args)
    model_name = default_model(args)
    repeats = args.repeats or 2
    episodes = args.episodes or (4 if args.quick else 8)

    from rolekit.backends import hf
    from rolekit.backends.hf import HFBackend, teacher_forced
    from rolekit.chat import ChatTokenizer
    from rolekit.models import load_model
    from rolekit.plugins import Kernel
    from rolekit.rollout import make_game, specs
    from rolekit.table import POLICY, ModelResponder, Scheduler

    loaded = load_model(model_name, device=args.device)
    chat = ChatTokenizer(loaded.tokenizer)
    backend = HFBackend(loaded.model, chat, max_batch_size=64)
    kernel = Kernel()
    per_game = {}
    for name in GAMES:
        game = make_game(kernel, name, {"choose": True})
        calls: list[list] = []
        score = backend.score

        def recording(pairs, **kw):
            calls.append(list(pairs))
            return score(pairs, **kw)

        backend.score = recording
        responder = ModelResponder(POLICY, backend, chat, temperature=1.0)
        torch.manual_seed(args.seed)
        played = list(Scheduler({POLICY: responder}, kernel=kernel, concurrency=episodes).run(
            specs(game, episodes, args.seed, {})))
        backend.score = score
        assert all(e.ok for e in played), [e.error for e in played if e.error]
        n_pairs = sum(len(p) for p in calls)
        distinct = sum(len({tuple(q) for q, _ in p}) for p in calls)
        say(f"{name}: {episodes} episodes, {len(calls)} scoring calls, {n_pairs} pairs, {distinct} distinct prompts")

        results = {}

        def contender(label, fn):
            def run() -> float:
                results[label] = [v for pairs in calls for v in fn(pairs)]
                return n_pairs
            return run

        def no_prefix(pairs):  # each distinct prompt in full: the shared header recomputed per prompt
            saved, hf.MIN_SHARED_PREFIX = hf.MIN_SHARED_PREFIX, 10**9
            try:
                return teacher_forced(backend.model, pairs, pad_id=chat.pad_id, batch_size=backend.max_batch_size,
                                      share=True)
            finally:
                hf.MIN_SHARED_PREFIX = saved

        contenders = {
            "shared prompt": contender("shared", lambda p: teacher_forced(
                backend.model, p, pad_id=chat.pad_id, batch_size=backend.max_batch_size, share=True)),
            "shared prompt, header per prompt": contender("no_prefix", no_prefix),
            "full passes": contender("full", lambda p: teacher_forced(
                backend.model, p, pad_id=chat.pad_id, batch_size=backend.max_batch_size, share=False)),
        }
        rates = side_by_side(contenders, repeats, device=args.device, log=say)
        diff = max(abs(a - b) for x, y in zip(results["shared"], results["full"]) for a, b in zip(x, y))
        per_game[name] = {
            "pairs": n_pairs, "distinct_prompts": distinct, "calls": len(calls),
            "pairs_per_s": {k: median(v) for k, v in rates.items()},
            "ratio": ratio(rates["shared prompt"], rates["full passes"]), "max_abs_logprob_diff": diff,
            "header_once_ratio": ratio(rates["shared prompt"], rates["shared prompt, header per prompt"]),
        }
        say(f"{name}: {per_game[name]}")
    emit("choose", min(g["ratio"] for g in per_game.values()), GOAL,
         "constrained-choice pairs/s, shared prompt pass / one full pass per pair (min over games)",
         model=model_name, repeats=repeats, quick=args.quick, games=per_game, machine=info)


if __name__ == "__main__":
    main()
