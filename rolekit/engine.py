"""The training loop: rollout -> reward -> advantage -> loss -> step -> sync -> log.

One model plays every seat the seat maps give to ``policy``; its turns become samples,
advantages are estimated per (game, role), and PPO-clip updates its weights (LoRA by
default). Read ``Trainer.run`` top to bottom: that is the whole algorithm.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import attrs
import torch

from rolekit import checkpoint, report
from rolekit.config import TrainConfig, to_toml
from rolekit.learner import Learner
from rolekit.plugins import Kernel
from rolekit.rollout import SCRIPTED, make_game, scripted_responders, summarize
from rolekit.table import POLICY, EpisodeSpec, ModelResponder, Scheduler
from rolekit.types import Episode, Sample

SNAPSHOT = "snapshot"


class TrainingAborted(RuntimeError):
    """Training cannot go on (repeated non-finite losses, ...); the message says why."""


# --- the curriculum -------------------------------------------------------------------------


class Curriculum:
    """Which game each new episode plays, with its seed and seat map; resumable."""

    def __init__(self, kernel: Kernel, config: TrainConfig):
        self.entries = config.curriculum
        self.games = [make_game(kernel, e.game, e.options) for e in self.entries]
        for entry, game in zip(self.entries, self.games):
            seats = {r: w for r, w in entry.seats.items() if w != SNAPSHOT}
            scripted_responders(kernel, game, seats)  # validates roles and opponent names now
            if not any(w in (POLICY, SNAPSHOT) for w in entry.seats.values()) and entry.seats and \
                    len(entry.seats) == len(game.roles):
                raise ValueError(f"curriculum game {entry.game!r}: no seat is played by the policy")
        self.rng = random.Random(config.seed)
        self.next_seed = config.seed * 1_000_003
        self.counts = [0] * len(self.entries)

    def active(self, step: int) -> list[int]:
        out = [i for i, e in enumerate(self.entries)
               if e.start_step <= step and (e.end_step is None or step < e.end_step)]
        if not out:
            raise ValueError(f"no curriculum game is active at step {step}")
        return out

    def next_spec(self, step: int, pool_size: int) -> EpisodeSpec:
        active = self.active(step)
        i = self.rng.choices(active, weights=[self.entries[k].weight for k in active])[0]
        entry, game = self.entries[i], self.games[i]
        n = self.counts[i]
        self.counts[i] += 1
        if entry.mirror and n % 2 == 1:
            seed = self.next_seed - 1  # replay the previous deal with the seats swapped
        else:
            seed = self.next_seed
            self.next_seed += 1
        roles = list(game.role_names())
        base = [entry.seats.get(r, POLICY) for r in roles]
        shift = (n if entry.alternate else 0) + (n % 2 if entry.mirror else 0)
        seats = {}
        for k, role in enumerate(roles):
            who = base[(k - shift) % len(roles)]
            if who == SNAPSHOT:
                who = f"{SNAPSHOT}:{self.rng.randrange(pool_size)}" if pool_size else POLICY
            seats[role] = who
        return EpisodeSpec(game, seed, seats)

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate(), "next_seed": self.next_seed, "counts": list(self.counts)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate(state["rng"])
        self.next_seed, self.counts = state["next_seed"], list(state["counts"])


# --- the policy --------------------------------------------------------------------------------


class Policy:
    """The trained model (LoRA adapter or full weights), its backend, and its snapshots."""

    def __init__(self, config: TrainConfig):
        from rolekit.backends.hf import HFBackend
        from rolekit.chat import ChatTokenizer
        from rolekit.models import load_model

        self.config = config
        loaded = load_model(config.model.name, device=config.model.device)
        self.tokenizer, self.device = loaded.tokenizer, loaded.device
        model = loaded.model
        if config.lora.enabled:
            import peft

            lora = config.lora
            model = peft.get_peft_model(model, peft.LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))
        else:
            model.requires_grad_(True)
        model.eval()
        self.model = model
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.chat = ChatTokenizer(self.tokenizer)
        self.backend = HFBackend(model, self.chat, max_batch_size=config.rollout.batch_size)
        self.pool: list[dict[str, torch.Tensor]] = []
        self._reference_model = None

    def responder(self, name: str = POLICY) -> ModelResponder:
        r = self.config.rollout
        return ModelResponder(name, self.backend, self.chat, max_new_tokens=r.max_new_tokens,
                              temperature=r.temperature, top_p=r.top_p)

    def weights(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone().cpu() for n, p in self.params.items()}

    @contextlib.contextmanager
    def using(self, weights: dict[str, torch.Tensor]):
        """Temporarily play with other trainable weights (a snapshot), then restore."""
        saved = self.weights()
        self._load(weights)
        try:
            yield
        finally:
            self._load(saved)

    def _load(self, weights: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(weights[n])

    def reference(self):
        """The reference policy for the KL term: the adapter-disabled base under LoRA."""
        if self.config.lora.enabled:
            @contextlib.contextmanager
            def disabled():
                with self.model.disable_adapter():
                    yield self.model
            return disabled()
        if self._reference_model is None:
            import copy

            self._reference_model = copy.deepcopy(self.model).requires_grad_(False)
        return contextlib.nullcontext(self._reference_model)

    def snapshot(self, pool_size: int) -> None:
        self.pool.append(self.weights())
        del self.pool[:-pool_size]

    def load_checkpoint(self, path: Path) -> None:
        from safetensors.torch import load_file

        if self.config.lora.enabled:
            import peft

            peft.set_peft_model_state_dict(self.model, load_file(path / "adapter_model.safetensors"))
        else:
            state = load_file(path / "model.safetensors")
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            if unexpected or any("lm_head" not in k for k in missing):
                raise ValueError(f"checkpoint {path} does not match the model ({missing[:3]} missing)")
            self.model.tie_weights()


class SnapshotResponder(ModelResponder):
    """A past version of the policy (fictitious self-play), swapped in for its asks."""

    def __init__(self, name: str, policy: Policy, index: int):
        base = policy.responder(name)
        super().__init__(name, base.backend, base.chat, **base.defaults)
        self.policy, self.index = policy, index

    def respond(self, asks):
        with self.policy.using(self.policy.pool[self.index]):
            return super().respond(asks)


# --- the trainer -------------------------------------------------------------------------------


class Trainer:
    def __init__(self, config: TrainConfig, out_dir: Path, *, resume: Path | None = None,
                 kernel: Kernel | None = None, quiet: bool | None = None, tensorboard: bool = False):
        self.config = config
        self.out = Path(out_dir)
        self.kernel = kernel or Kernel()
        self.quiet = config.logging.quiet if quiet is None else quiet
        self.tensorboard = report.TensorBoard(self.out) if tensorboard else None  # scalars per step
        torch.manual_seed(config.seed)
        self.curriculum = Curriculum(self.kernel, config)
        self.policy = Policy(config)
        alg = config.algorithm
        self.estimators = {}
        for name in {alg.advantage, *(e.advantage for e in config.curriculum if e.advantage)}:
            options = alg.advantage_options if name == alg.advantage else {}
            self.estimators[name] = self.kernel.advantages.get(name)(**options)
        self.learner = Learner(self.policy.model, list(self.policy.params.values()), alg,
                               device=self.policy.device, reference=self.policy.reference)
        self.scripted = {}
        for game, entry in zip(self.curriculum.games, config.curriculum):
            seats = {r: w for r, w in entry.seats.items() if w.startswith(SCRIPTED)}
            self.scripted.update(scripted_responders(self.kernel, game, seats))
        self.step = 0
        self.leftover: list[Sample] = []
        self.nonfinite_streak = 0
        self.elapsed = 0.0
        if resume is not None:
            self._resume(Path(resume))

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> list[dict]:
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.toml").write_text(to_toml(cfg))
        history = []
        budget = cfg.algorithm.max_minutes
        deadline = None if budget is None else time.perf_counter() + 60.0 * budget
        last = False
        with self._display() as show:
            while self.step < cfg.algorithm.steps and not last:
                start = time.perf_counter()
                tokens_before = self.policy.backend.tokens_generated

                # --- rollout: play until the step has enough policy samples ----------------
                episodes, samples = self._rollout()
                timing = {"rollout": time.perf_counter() - start}
                batch = samples[: cfg.rollout.samples_per_step]
                self.leftover = samples[cfg.rollout.samples_per_step:]

                # --- learn: PPO-clip over the batch (the backend shares these weights) -------
                learned = self.learner.step(batch, cfg.rollout.max_new_tokens) if batch else {}
                timing["learn"] = time.perf_counter() - start - timing["rollout"]
                self._check_finite(learned)
                self.policy.backend.sync()
                self.step += 1
                last = self.step == cfg.algorithm.steps or (deadline is not None and time.perf_counter() >= deadline)

                # --- snapshots, metrics, evaluation, checkpoint ----------------------------
                if self.step % cfg.snapshots.every == 0:
                    self.policy.snapshot(cfg.snapshots.pool_size)
                seconds = time.perf_counter() - start
                self.elapsed += seconds
                metrics = self._metrics(episodes, batch, learned, seconds,
                                        self.policy.backend.tokens_generated - tokens_before)
                metrics["timing"] = {k: round(v, 3) for k, v in timing.items()}
                if cfg.eval.every and (self.step % cfg.eval.every == 0 or last):
                    eval_start = time.perf_counter()
                    metrics["eval"] = self.evaluate()
                    metrics["timing"]["eval"] = round(time.perf_counter() - eval_start, 3)
                self.kernel.step_end(self.step, metrics)
                self._write(metrics, episodes, batch)
                if self.tensorboard is not None:
                    self.tensorboard.log(metrics)
                if (cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0) or last:
                    self.save()
                    report.refresh(self.out)  # RUN_DIR/report.html; a failure is only a warning
                history.append(metrics)
                show(metrics)
        return history

    def _rollout(self) -> tuple[list[Episode], list[Sample]]:
        """Play episodes until there are ``samples_per_step`` samples; finish those in flight.

        New episodes start only while the samples in hand plus those expected from the
        episodes in flight fall short of the target, so a step does not overshoot.
        """
        target = self.config.rollout.samples_per_step
        samples = list(self.leftover)
        episodes: list[Episode] = []
        pool = len(self.policy.pool)
        responders = {POLICY: self.policy.responder(), **self.scripted}
        responders.update({f"{SNAPSHOT}:{i}": SnapshotResponder(f"{SNAPSHOT}:{i}", self.policy, i)
                           for i in range(pool)})
        scheduler = Scheduler(responders, kernel=self.kernel, concurrency=self.config.rollout.concurrency)
        started = 0
        limit = max(1000, 50 * target)  # episodes without a sample before giving up

        def source() -> Iterator[EpisodeSpec]:
            nonlocal started
            while True:
                per_episode = (len(samples) - len(self.leftover)) / len(episodes) if episodes else 1.0
                in_flight = started - len(episodes)
                if len(samples) + in_flight * max(per_episode, 0.05) >= target:
                    return
                started += 1
                yield self.curriculum.next_spec(self.step, pool)

        while len(samples) < target:
            for episode in scheduler.run(source()):
                episodes.append(episode)
                if episode.ok and not episode.info.get("dropped"):
                    samples += self._advantages(episode)
            if len(episodes) >= limit and len(samples) <= len(self.leftover):
                raise TrainingAborted(
                    f"{len(episodes)} episodes gave no training sample: every advantage was 0 or no seat is "
                    f"played by the policy (estimator {self.config.algorithm.advantage!r}: grpo needs asks "
                    f"with n > 1; rae drops turns whose return equals the baseline)")
        return episodes, samples

    def _advantages(self, episode: Episode) -> list[Sample]:
        entry = next(e for e in self.config.curriculum if e.game == episode.game)
        estimator = self.estimators[entry.advantage or self.config.algorithm.advantage]
        roles = [r for r, who in episode.seats.items() if who == POLICY]
        return estimator.samples([(episode, role) for role in roles])

    def _check_finite(self, learned: dict) -> None:
        if not learned.get("nonfinite"):
            self.nonfinite_streak = 0
            return
        self.nonfinite_streak += 1
        print(f"rolekit: step {self.step + 1}: non-finite loss or gradient, update skipped", file=sys.stderr)
        if self.nonfinite_streak >= self.config.algorithm.max_nonfinite_steps:
            raise TrainingAborted(f"{self.nonfinite_streak} consecutive steps with a non-finite loss; "
                                  f"lower algorithm.lr or check the rewards")

    # --- evaluation ---------------------------------------------------------------------------

    def evaluate(self) -> dict[str, Any]:
        """Win rates vs scripted opponents and exact Kuhn exploitability (same code as rolekit eval)."""
        from rolekit import evaluate
        from rolekit.models import LoadedModel

        cfg, temperature = self.config.eval, self.config.rollout.temperature
        policy = evaluate.Policy(POLICY, self.policy.responder(), model=LoadedModel(
            self.policy.model, self.policy.tokenizer, self.config.model.name, self.policy.device),
            backend=self.policy.backend, chat=self.policy.chat)
        out: dict[str, Any] = {}
        for game in {g.name: g for g in self.curriculum.games}.values():
            result: dict[str, Any] = {}
            for name in cfg.opponents:
                entry = self.kernel.opponents.entry(name)
                if entry.meta.get("games") is not None and game.name not in entry.meta["games"]:
                    continue
                with torch.random.fork_rng():  # evaluation must not shift the training RNG stream
                    torch.manual_seed(self.config.seed + self.step)
                    episodes = evaluate.play_against(self.kernel, game, policy, name, episodes=cfg.episodes,
                                                     seed=10**9 + self.step)
                result[name] = {k: v for k, v in evaluate.score(episodes).items() if k != "by_seat"}
            if cfg.exploitability and hasattr(game, "information_sets") and hasattr(game, "exploitability") \
                    and getattr(game, "mode", "") == "terse":
                table = evaluate.strategy(game, policy, temperature=temperature)
                result["exploitability"] = {"exploitability": table["exploitability"], "infosets": table["infosets"]}
            out[game.name] = result
        return out

    # --- logging -----------------------------------------------------------------------------

    def _metrics(self, episodes, batch, learned, seconds, tokens) -> dict[str, Any]:
        by_role: dict[str, dict[str, Any]] = {}
        for game in sorted({e.game for e in episodes}):
            policy_eps = [e for e in episodes if e.game == game]
            summary = summarize(policy_eps)
            for role, s in summary.items():
                key = f"{game}/{role}"
                played = [e for e in policy_eps if e.ok and e.seats.get(role) == POLICY]
                row = {k: v for k, v in s.items()}
                row["policy_episodes"] = len(played)
                if played:
                    row["mean_return"] = statistics.fmean(e.returns[role] for e in played)
                    for k in ("win", "loss", "invalid"):
                        row[k] = sum(_outcome(e, role) == k for e in played) / len(played)
                    row["draw"] = sum(_outcome(e, role) == "draw" for e in played) / len(played)
                by_role[key] = row
        for key, rows in _group(batch).items():
            adv = [s.advantage for s in rows]
            row = by_role.setdefault(key, {})
            row.update(samples=len(rows), adv_mean=statistics.fmean(adv),
                       adv_std=statistics.pstdev(adv) if len(adv) > 1 else 0.0,
                       response_length=statistics.fmean(len(s.completion_ids) for s in rows))
            row.update(learned.get("by_role", {}).get(key, {}))
        for est in self.estimators.values():
            for key, b in est.state_dict().get("baselines", {}).items():
                if key.count("/") != 1:
                    continue  # finer baselines (rae key="prompt"): too many to log
                by_role.setdefault(key, {})["baseline"] = b
        return {
            "step": self.step, "episodes": len(episodes), "quarantined": sum(not e.ok for e in episodes),
            "samples": len(batch), "leftover": len(self.leftover), "tokens": tokens,
            "trained_tokens": learned.get("trained_tokens", 0), "seconds": round(seconds, 3),
            "elapsed": round(self.elapsed, 3),
            "episodes_per_s": len(episodes) / seconds if seconds else 0.0,
            "tokens_per_s": tokens / seconds if seconds else 0.0,
            "loss": learned.get("loss"), "grad_norm": learned.get("grad_norm"),
            "padding_fraction": learned.get("padding_fraction"), "skipped_update": bool(learned.get("nonfinite")),
            "roles": by_role,
        }

    def _write(self, metrics: dict, episodes: list[Episode], batch: list[Sample]) -> None:
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics, default=_jsonable) + "\n")
        advantage = {s.turn: s.advantage for s in batch}
        keep = episodes[: self.config.logging.episodes_per_step]
        with open(self.out / "episodes.jsonl", "a") as f:
            for e in keep:
                f.write(json.dumps(episode_record(e, self.step, advantage), default=_jsonable) + "\n")

    @contextlib.contextmanager
    def _display(self):
        if self.quiet or not sys.stderr.isatty():
            yield lambda m: print(_line(m), flush=True)
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("step"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(),
                            TextColumn("{task.fields[status]}"), console=Console(stderr=True))
        task = progress.add_task("train", total=self.config.algorithm.steps, completed=self.step, status="")
        with progress:
            def show(m):
                progress.update(task, completed=m["step"], status=_status(m))
                progress.console.print(_line(m), highlight=False, markup=False)
            yield show

    # --- checkpoints ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "elapsed": self.elapsed,
            "optimizer": self.learner.state_dict(),
            "estimators": {n: e.state_dict() for n, e in self.estimators.items()},
            "curriculum": self.curriculum.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "leftover": [attrs.asdict(s) for s in self.leftover],
            "pool": self.policy.pool, "nonfinite_streak": self.nonfinite_streak,
        }

    def save(self) -> Path:
        return checkpoint.save(self.out / "checkpoints", self.step, self.policy.model, self.policy.tokenizer,
                               self.state_dict(), model_name=self.config.model.name, keep=self.config.checkpoint.keep)

    def _resume(self, path: Path) -> None:
        found = checkpoint.latest(path)
        if found is None:
            raise FileNotFoundError(f"--resume {path}: no checkpoint found (expected checkpoints/step-N/)")
        state = checkpoint.load_state(found)
        self.policy.load_checkpoint(found)
        self.learner.load_state_dict(state["optimizer"])
        for name, s in state["estimators"].items():
            self.estimators[name].load_state_dict(s)
        self.curriculum.load_state_dict(state["curriculum"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.leftover = [Sample(**s) for s in state["leftover"]]
        self.policy.pool = state["pool"]
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.nonfinite_streak = state["nonfinite_streak"]
        print(f"rolekit: resumed from {found} at step {self.step}", file=sys.stderr)


# --- helpers ----------------------------------------------------------------------------------


def _outcome(episode: Episode, role: str) -> str:
    if episode.info.get("invalid") == role:
        return "invalid"
    winner = episode.info.get("winner")
    return "draw" if winner is None else "win" if winner == role else "loss"


def _group(samples: list[Sample]) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        out[f"{s.game}/{s.role}"].append(s)
    return out


def episode_record(e: Episode, step: int, advantage: dict[int, float]) -> dict[str, Any]:
    return {
        "step": step, "game": e.game, "seed": e.seed, "seats": e.seats, "returns": e.returns, "info": e.info,
        "error": e.error,
        "turns": [{"id": t.id, "role": t.role, "responder": t.responder, "prompt": t.prompt, "text": t.text,
                   "action": t.action, "reward": e.rewards.get(t.id), "advantage": advantage.get(t.id),
                   "tokens": len(t.completion_ids)} for t in e.turns],
    }


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (set, tuple)):
        return list(x)
    return str(x)


def _status(m: dict) -> str:
    parts = [f"{m['episodes_per_s']:.1f} ep/s"]
    if m["tokens"]:  # constrained choices generate no tokens: show decisions trained per second
        parts.append(f"{m['tokens_per_s']:.0f} tok/s")
    elif m.get("seconds"):
        parts.append(f"{m['samples'] / m['seconds']:.1f} decisions/s")
    for key, row in sorted(m["roles"].items()):
        if "mean_return" in row:
            parts.append(f"{key} R={row['mean_return']:+.2f} inv={row.get('invalid', 0):.2f}")
    return "  ".join(parts)


def _line(m: dict) -> str:
    loss = f"{m['loss']:+.4f}" if m.get("loss") is not None else "-"
    line = f"step {m['step']:>4}  eps {m['episodes']:>3}  samples {m['samples']:>3}  loss {loss}  " + _status(m)
    for game, res in (m.get("eval") or {}).items():
        for k, v in res.items():
            if k == "exploitability":
                line += f"  | eval {game} exploitability {v['exploitability']:.3f}"
            elif isinstance(v, dict) and "win" in v:
                line += f"  | eval {game} vs {k}: win {v['win']:.2f}"
    return line
