"""The training loop: rollout -> reward -> advantage -> loss -> step -> sync -> log.

One model plays every seat the seat maps give to ``policy``; its turns become samples,
advantages are estimated per (game, role), and PPO-clip updates its weights (LoRA by
default). Read ``Trainer.run`` top to bottom: that is the whole algorithm.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
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
from rolekit.plugins import Kernel, closest
from rolekit.advantages import policy_turns
from rolekit.pools import Pools
from rolekit.population import Population, score_of
from rolekit.rollout import SCRIPTED, make_game, rotate, scripted_responders, summarize
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
        self.last_seed = [None] * len(self.entries)  # per entry: the deal a mirrored pair replays
        self.pools = [Pools() for _ in self.entries]  # per entry: the game's task pools

    def active(self, step: int) -> list[int]:
        out = [i for i, e in enumerate(self.entries)
               if e.start_step <= step and (e.end_step is None or step < e.end_step)]
        if not out:
            raise ValueError(f"no curriculum game is active at step {step}")
        return out

    def next_spec(self, step: int, pool_size: int, population: Population | None = None) -> EpisodeSpec:
        """The next episode; a ``snapshot`` seat plays pool member ``population.draw`` (its
        weighting), or one drawn uniformly without a population."""
        active = self.active(step)
        i = self.rng.choices(active, weights=[self.entries[k].weight for k in active])[0]
        entry, game = self.entries[i], self.games[i]
        n = self.counts[i]
        self.counts[i] += 1
        mirrored = entry.mirror and n % 2 == 1 and self.last_seed[i] is not None
        if mirrored:
            seed = self.last_seed[i]  # this game's previous deal again, the seats swapped
        else:
            seed = self.last_seed[i] = self.next_seed
            self.next_seed += 1
        # mirrored pairs rotate once per pair (then once more inside it); plain ones every episode
        shift = ((n // 2 if entry.mirror else n) if entry.alternate else 0) + (n % 2 if entry.mirror else 0)
        seats = {}
        for role, who in rotate(game, {r: entry.seats.get(r, POLICY) for r in game.role_names()}, shift).items():
            if who == SNAPSHOT:
                index = (population.draw(self.rng) if population is not None else self.rng.randrange(pool_size)) \
                    if pool_size else None
                who = f"{SNAPSHOT}:{index}" if index is not None else POLICY
            seats[role] = who
        return EpisodeSpec(game, seed, seats, entry=i, pools=self.pools[i])

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate(), "next_seed": self.next_seed, "counts": list(self.counts),
                "last_seed": list(self.last_seed), "pools": [p.state_dict() for p in self.pools]}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate(state["rng"])
        self.next_seed, self.counts = state["next_seed"], list(state["counts"])
        self.last_seed = list(state.get("last_seed", [None] * len(self.entries)))
        for pools, saved in zip(self.pools, state.get("pools", [])):
            pools.load_state_dict(saved)


def resolve_estimators(entry, game, alg) -> dict[str, tuple[str, dict, str]]:
    """role -> (estimator name, options, label) for one curriculum entry.

    ``entry.advantage``: one name for every role, or a table role -> name; roles it does
    not name use the game's own choice (``Game.estimators``), else ``algorithm.advantage``. Options: ``algorithm.advantage_options`` for the
    default estimator, updated by the entry's ``advantage_options[name]``. The label names
    the estimator instance (its name, plus its options when they are not the default's), so
    roles with the same name and options share one (and its baselines, kept per role)."""
    roles = game.role_names()
    chosen = entry.advantage if isinstance(entry.advantage, dict) else {r: entry.advantage for r in roles}
    for role in chosen:
        if role not in roles:
            close = closest(role, roles)
            hint = f"; did you mean {close!r}?" if close else ""
            raise ValueError(f"curriculum game {entry.game!r}: advantage names role {role!r}, which the game does "
                             f"not have{hint} (roles: {', '.join(roles)})")
    out = {}
    for role in roles:
        name = chosen.get(role) or getattr(game, "estimators", {}).get(role) or alg.advantage
        default = dict(alg.advantage_options) if name == alg.advantage else {}
        options = {**default, **entry.advantage_options.get(name, {})}
        label = name if options == default else f"{name}{json.dumps(options, sort_keys=True)}"
        out[role] = (name, options, label)
    used = sorted({name for name, _, _ in out.values()})
    for name in entry.advantage_options:
        if name not in used:
            close = closest(name, used)
            hint = f"; did you mean {close!r}?" if close else ""
            raise ValueError(f"curriculum game {entry.game!r}: advantage_options for {name!r}, an estimator no role "
                             f"of it uses{hint} (used: {', '.join(used)}; options go under the estimator's name, "
                             f"e.g. advantage_options = {{ rae = {{ decay = 0.9 }} }})")
    return out


# --- the policy --------------------------------------------------------------------------------


class Policy:
    """The trained model (LoRA adapter or full weights), its backend, and its snapshots."""

    def __init__(self, config: TrainConfig):
        from rolekit.backends import make_backend
        from rolekit.chat import ChatTokenizer
        from rolekit.models import load_model

        self.config = config
        # full FT: fp32 master weights. LoRA under model.bf16: a bf16 base (autocast would cast
        # every frozen fp32 weight again at every forward pass), the adapter fp32 (peft)
        bf16_base = bool(config.model.bf16) and config.lora.enabled
        loaded = load_model(config.model.name, device=config.model.device,
                            finetune="lora" if config.lora.enabled else "full",
                            dtype=torch.bfloat16 if bf16_base else None)
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
        # rollout.backend: "hf" generates with this very module; "vllm" runs an engine in this
        # process, fed the new adapter or weights by every sync (a LoRA slot per snapshot in use)
        self.backend = make_backend(config.rollout.backend, model, self.chat, max_batch_size=config.rollout.batch_size,
                                    adapters=config.snapshots.pool_size + 1, seed=config.seed,
                                    autocast_bf16=config.model.bf16)
        self.local_backend = self.backend  # generates from this process's model, whatever it is set to
        if config.distributed.ray_address is not None:  # generation on Ray workers, each with a copy of the model
            from rolekit.distributed.rollout import RayBackend

            self.backend = RayBackend(config, model, self.params)
        self.pool: list[dict[str, torch.Tensor]] = []
        snap = config.snapshots  # the pool's bookkeeping: steps, Elo ratings, mixture weights
        self.population = Population(snap.weighting, capacity=snap.pool_size, recency_decay=snap.recency_decay,
                                     elo_k=snap.elo_k)
        # Full fine-tuning with a KL term: the reference is the initial model, copied now,
        # before any checkpoint is loaded into the trained one (a lazy copy made after a
        # --resume would be the trained checkpoint, and the KL would read 0).
        self._reference_model = None
        if not config.lora.enabled and config.algorithm.kl_beta > 0:
            import copy

            self._reference_model = copy.deepcopy(model).requires_grad_(False).eval()

    def responder(self, name: str = POLICY) -> ModelResponder:
        r = self.config.rollout
        seeded = r.seeded_sampling or self.config.distributed.ray_address is not None  # Ray: as in one process
        return ModelResponder(name, self.backend, self.chat, max_new_tokens=r.max_new_tokens,
                              temperature=r.temperature, top_p=r.top_p, seeded=seeded)

    def weights(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone().cpu() for n, p in self.params.items()}

    @contextlib.contextmanager
    def using(self, weights: dict[str, torch.Tensor]):
        """Temporarily play with other trainable weights (a snapshot), then restore."""
        saved = self.weights()
        self._load(weights)
        self.backend.sync()  # a backend holding its own copy (Ray workers) must see the swap
        try:
            yield
        finally:
            self._load(saved)
            self.backend.sync()

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
            raise ValueError("a reference policy needs algorithm.kl_beta > 0 (full fine-tuning copies the initial "
                             "model at start-up)")
        return contextlib.nullcontext(self._reference_model)

    def snapshot(self, pool_size: int, step: int = 0) -> None:
        """The policy as it is now joins the pool (the population), the oldest leaving past ``pool_size``."""
        self.pool.append(self.weights())
        del self.pool[:-pool_size]
        self.population.add(step)

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
        self.backend.sync()  # a backend holding its own copy of the weights (vLLM) must see them


class SnapshotResponder(ModelResponder):
    """A past version of the policy (fictitious self-play), swapped in for its asks."""

    def __init__(self, name: str, policy: Policy, index: int):
        base = policy.responder(name)
        super().__init__(name, base.backend, base.chat, **base.defaults, seeded=base.seeded)
        self.policy, self.index = policy, index

    def respond(self, asks):
        with self.policy.using(self.policy.pool[self.index]):
            return super().respond(asks)


# --- the trainer -------------------------------------------------------------------------------


def _wandb(cfg: TrainConfig, out: Path, resolved: TrainConfig, *, resume: bool):
    """The run's Weights & Biases logger (``rolekit.wandb_logger``), or None without ``logging.wandb``."""
    if not cfg.logging.wandb:
        return None
    from rolekit.config import to_dict
    from rolekit.wandb_logger import WandB

    log = cfg.logging
    return WandB(out, to_dict(resolved), project=log.wandb_project, name=log.wandb_name, tags=log.wandb_tags,
                 resume=resume)


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
        # --- advantage estimators: one per (name, options); each (entry, role) routed to one
        self.estimators: dict[str, Any] = {}
        self.route: dict[tuple[int, str], str] = {}
        self.resolved = [resolve_estimators(entry, game, alg)  # per entry: role -> (name, options, label)
                         for entry, game in zip(config.curriculum, self.curriculum.games)]
        for i, (entry, resolved) in enumerate(zip(config.curriculum, self.resolved)):
            for role, (name, options, label) in resolved.items():
                if label not in self.estimators:
                    factory = self.kernel.advantages.get(name)
                    try:
                        self.estimators[label] = factory(**options)
                    except (TypeError, ValueError) as exc:
                        raise ValueError(f"curriculum game {entry.game!r}: estimator {name!r} options {options}: "
                                         f"{exc}") from None
                self.route[(i, role)] = label
        from rolekit.distributed.learner import DataParallel  # torch.distributed only; no Ray

        # None unless launched by torchrun; distributed.learner: "ddp" or "zero" (AdamW's state sharded)
        self.data_parallel = DataParallel.from_env(self.policy.device, config.distributed.learner)
        learner = Learner if self.data_parallel is None else self.data_parallel.learner_class
        self.learner = learner(self.policy.model, list(self.policy.params.values()), alg,
                               device=self.policy.device, reference=self.policy.reference,
                               autocast_bf16=config.model.bf16, data_parallel=self.data_parallel)
        self.scripted = {}
        for game, entry in zip(self.curriculum.games, config.curriculum):
            seats = {r: w for r, w in entry.seats.items() if w.startswith(SCRIPTED)}
            self.scripted.update(scripted_responders(self.kernel, game, seats))
        # --- judges (table.judge): judge:frozen is the base, the adapter disabled -----------
        from rolekit.verifiers.judges import JudgeContext, Judges

        judge = self.policy.responder("judge:policy")
        judge.backend = self.policy.local_backend  # judge:frozen disables the adapter here, not on Ray workers
        self.judges = Judges(self.kernel, JudgeContext(
            policy=judge, base=self._frozen_base(), device=str(self.policy.device)))
        self.step = 0
        self.leftover: list[Sample] = []
        self.stale: dict[str, int] = {}  # game/role -> leftover samples dropped this step as too old
        self.nonfinite_streak = 0
        self.elapsed = 0.0
        self.best: dict[str, Any] | None = None  # checkpoint.keep_best: {metric, value, step} of checkpoints/best
        self._snapshot_tables: dict[tuple[str, int], Any] = {}  # (game, snapshot step) -> its strategy table
        if resume is not None:
            self._resume(Path(resume))

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> list[dict]:
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.toml").write_text(to_toml(self.resolved_config()))
        wandb = _wandb(cfg, self.out, self.resolved_config(), resume=self.step > 0)  # None unless logging.wandb
        history = []
        budget = cfg.algorithm.max_minutes
        deadline = None if budget is None else time.perf_counter() + 60.0 * budget
        last = False
        if cfg.eval.every and cfg.eval.at_start and self.step == 0:
            start = time.perf_counter()
            before = {"step": 0, "eval": self._safe_evaluate(), "timing": {}, "roles": {}}
            before["timing"]["eval"] = round(time.perf_counter() - start, 3)
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(before, default=_jsonable) + "\n")
            print(_eval_line(before), flush=True)
        with self._display() as show:
            while self.step < cfg.algorithm.steps and not last:
                start = time.perf_counter()
                tokens_before = self.policy.backend.tokens_generated

                # --- rollout: play until the step has enough policy samples ----------------
                self.judges.reset()
                episodes, samples = self._rollout()
                timing = {"rollout": time.perf_counter() - start}
                batch = samples[: cfg.rollout.samples_per_step]
                self.leftover = samples[cfg.rollout.samples_per_step:]

                # --- learn: PPO-clip over the batch (the backend shares these weights) -------
                if hasattr(self.policy.backend, "sleep"):  # vLLM on a GPU: its memory to the learner until sync
                    self.policy.backend.sleep()
                self.learner.at_step(self.step, cfg.algorithm.steps)
                learned = self.learner.step(batch, cfg.rollout.max_new_tokens) if batch else {}
                timing["learn"] = time.perf_counter() - start - timing["rollout"]
                self._check_finite(learned)
                self.policy.backend.sync()
                self.step += 1
                last = self.step == cfg.algorithm.steps or (deadline is not None and time.perf_counter() >= deadline)

                # --- snapshots, metrics, evaluation, checkpoint ----------------------------
                if self.step % cfg.snapshots.every == 0:
                    self.policy.snapshot(cfg.snapshots.pool_size, self.step)
                seconds = time.perf_counter() - start
                self.elapsed += seconds
                metrics = self._metrics(episodes, batch, learned, seconds,
                                        self.policy.backend.tokens_generated - tokens_before)
                metrics["timing"] = {k: round(v, 3) for k, v in timing.items()}
                if judged := self.judges.stats():  # spec -> calls, items, no-verdict rate, seconds
                    metrics["judges"] = judged
                if cfg.eval.every and (self.step % cfg.eval.every == 0 or last):
                    eval_start = time.perf_counter()
                    metrics["eval"] = self._safe_evaluate()
                    metrics["timing"]["eval"] = round(time.perf_counter() - eval_start, 3)
                    self._keep_best(metrics["eval"])
                self.kernel.step_end(self.step, metrics)
                self._write(metrics, episodes, batch)
                if self.tensorboard is not None:
                    self.tensorboard.log(metrics)
                if wandb is not None:
                    wandb.log(metrics)  # the same scalars as TensorBoard
                if (cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0) or last:
                    self.save()
                    report.refresh(self.out)  # RUN_DIR/report.html; a failure is only a warning
                history.append(metrics)
                show(metrics)
        if self.best is not None and history:
            print(_final_line(self.best, history), flush=True)
        if wandb is not None:
            wandb.finish()  # the report as an artifact, sampled transcripts as a table
        return history

    def _frozen_base(self):
        """How ``judge:frozen`` reaches the untrained model without a second copy: the LoRA
        adapter disabled. Full fine-tuning has none (the judge then says to name the model:
        ``judge:<model.name>`` loads the base once more)."""
        return self.policy.reference if self.config.lora.enabled else None

    def resolved_config(self) -> TrainConfig:
        """The config as run: each curriculum entry names every role's estimator and options."""
        entries = []
        for entry, resolved in zip(self.config.curriculum, self.resolved):
            options = {name: opts for name, opts, _ in resolved.values() if opts}
            entries.append(attrs.evolve(entry, advantage={r: name for r, (name, _, _) in resolved.items()},
                                        advantage_options=options))
        return attrs.evolve(self.config, curriculum=tuple(entries))

    def _rollout(self) -> tuple[list[Episode], list[Sample]]:
        """Play episodes until there are ``samples_per_step`` samples; finish those in flight.

        New episodes start only while the samples in hand plus those expected from the
        episodes in flight fall short of the target, so a step does not overshoot. The
        estimators then see all the round's finished episodes at once; a round whose
        estimators dropped too many turns (zero advantages) is topped up by another.
        """
        target = self.config.rollout.samples_per_step
        samples = self._fresh_leftover()
        episodes: list[Episode] = []
        pool = len(self.policy.pool)
        responders = {POLICY: self.policy.responder(), **self.scripted}
        responders.update({f"{SNAPSHOT}:{i}": SnapshotResponder(f"{SNAPSHOT}:{i}", self.policy, i)
                           for i in range(pool)})
        scheduler = Scheduler(responders, kernel=self.kernel, concurrency=self.config.rollout.concurrency,
                              judges=self.judges)
        started, candidates, kept_ratio = 0, 0, 1.0  # candidates: trainable turns of this step's episodes
        limit = max(1000, 50 * target)  # episodes without a sample before giving up
        carried = len(samples)

        def source() -> Iterator[EpisodeSpec]:  # (samples grow only between rounds)
            nonlocal started
            while True:
                finished = len(episodes)
                per_episode = candidates / finished if finished else 1.0  # trainable turns per episode
                expected = round_candidates + (started - finished) * max(per_episode, 0.05)
                if len(samples) + kept_ratio * expected >= target:
                    return
                started += 1
                yield self.curriculum.next_spec(self.step, pool, self.policy.population)

        while len(samples) < target:
            fresh: list[Episode] = []
            round_candidates = 0
            for episode in scheduler.run(source()):
                episodes.append(episode)
                self._rate(episode)
                fresh.append(episode)
                n = sum(len(policy_turns(episode, role)) for role in _trained_roles(episode))
                candidates += n
                round_candidates += n
            new = self._advantages(fresh)
            samples += new
            if round_candidates:
                kept_ratio = max(len(new) / round_candidates, 0.05)
            if len(episodes) >= limit and len(samples) <= carried:
                raise TrainingAborted(
                    f"{len(episodes)} episodes gave no training sample: every advantage was 0, every turn was "
                    f"dropped, or no seat is played by the policy (estimators: {', '.join(self.estimators)}; grpo "
                    f"needs asks with n > 1 and differing rewards; rae drops turns whose reward equals the baseline)")
        return episodes, samples

    def _rate(self, episode: Episode) -> None:
        """Elo: a finished game of the policy against a snapshot moves both ratings."""
        if not episode.ok or "winner" not in episode.info:
            return
        policy_roles = [r for r, who in episode.seats.items() if who == POLICY]
        members = [who for who in episode.seats.values() if who.startswith(SNAPSHOT + ":")]
        if len(policy_roles) == 1 and len(members) == 1:
            index = int(members[0].split(":", 1)[1])
            if index < len(self.policy.population):
                self.policy.population.record(index, score_of(episode.info["winner"], policy_roles[0]))

    def _fresh_leftover(self) -> list[Sample]:
        """The samples carried from earlier steps that are young enough to train on
        (``rollout.max_sample_age`` steps); the rest are dropped and counted."""
        max_age = self.config.rollout.max_sample_age
        self.stale = defaultdict(int)
        fresh = []
        for s in self.leftover:
            if self.step - s.version <= max_age:
                fresh.append(s)
            else:
                self.stale[f"{s.game}/{s.role}"] += 1
        return fresh

    def _advantages(self, episodes: list[Episode]) -> list[Sample]:
        """Every estimator sees all of its (episode, role) pairs of ``episodes`` at once."""
        routed: dict[str, list[tuple[Episode, str]]] = {}
        for episode in episodes:
            for role in _trained_roles(episode):
                routed.setdefault(self.route[(episode.entry, role)], []).append((episode, role))
        return [attrs.evolve(s, version=self.step)
                for label, items in routed.items() for s in self.estimators[label].samples(items)]

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

    def _safe_evaluate(self) -> dict[str, Any]:
        try:
            return self.evaluate()
        except Exception as exc:  # an evaluation never costs the run its checkpoint
            print(f"rolekit: step {self.step}: evaluation failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return {"error": f"{type(exc).__name__}: {exc}"}

    def evaluate(self) -> dict[str, Any]:
        """What each game offers (``Game.evaluate``: scripted opponents, exact exploitability,
        a held-out task set), through the same code as ``rolekit eval``. A failing
        evaluation is reported in its game's result, never raised."""
        from rolekit import evaluate
        from rolekit.models import LoadedModel

        cfg = self.config.eval
        policy = evaluate.Policy(POLICY, self.policy.responder(), model=LoadedModel(
            self.policy.model, self.policy.tokenizer, self.config.model.name, self.policy.device),
            backend=self.policy.backend, chat=self.policy.chat)
        out: dict[str, Any] = {}
        for game in {g.name: g for g in self.curriculum.games}.values():
            ev = evaluate.Evaluator(self.kernel, game, policy, opponents=cfg.opponents, episodes=cfg.episodes,
                                    seed=10**9 + self.step, torch_seed=self.config.seed + self.step,
                                    exploitability=cfg.exploitability, temperature=self.config.rollout.temperature)
            result = evaluate.run_evaluations(ev)
            if cfg.average and cfg.exploitability and self.policy.pool and hasattr(game, "average_strategy") \
                    and getattr(game, "mode", "terse") == "terse":
                try:
                    result["average"] = self._average_strategy(game)
                except Exception as exc:  # reported, never fatal
                    result["average"] = {"error": f"{type(exc).__name__}: {exc}"}
            if result:
                out[game.name] = result
        return out

    def _average_strategy(self, game) -> dict[str, Any]:
        """The exact exploitability of the average policy: each pool member's strategy table
        (computed once per member), mixed with the population's weights, reach-weighted at
        every information set (``game.average_strategy``)."""
        from rolekit import evaluate

        population = self.policy.population
        temperature = self.config.rollout.temperature
        tables = []
        for weights, step in zip(self.policy.pool, population.steps):
            key = (game.name, step)
            if key not in self._snapshot_tables:
                with self.policy.using(weights):
                    self._snapshot_tables[key] = evaluate.exact_policy_table(
                        self.policy.model, self.policy.chat, game, temperature=temperature)
            tables.append(self._snapshot_tables[key])
        live = {(game.name, step) for step in population.steps}
        for key in [k for k in self._snapshot_tables if k[0] == game.name and k not in live]:
            del self._snapshot_tables[key]
        return evaluate.average_strategy(game, tables, population.weights(), weighting=population.weighting,
                                         steps=population.steps)

    def _keep_best(self, evaluation: dict[str, Any]) -> None:
        """checkpoint.keep_best: when this evaluation beats the best so far on the metric,
        write ``checkpoints/best`` (a full checkpoint, so it resumes and evaluates like any)."""
        name = self.config.checkpoint.keep_best
        if not name:
            return
        metric = self.best["metric"] if self.best else checkpoint.best_metric(evaluation, name)
        if metric is None:
            return
        value = checkpoint.metric_value(evaluation, metric)
        if value is None:
            return
        if self.best is not None and not checkpoint.improves(metric, value, self.best["value"]):
            return
        self.best = {"metric": metric, "value": value, "step": self.step}
        checkpoint.save(self.out / "checkpoints", self.step, self.policy.model, self.policy.tokenizer,
                        self.state_dict(), model_name=self.config.model.name, name=checkpoint.BEST,
                        info={"best": self.best})

    # --- logging -----------------------------------------------------------------------------

    def _metrics(self, episodes, batch, learned, seconds, tokens) -> dict[str, Any]:
        by_role: dict[str, dict[str, Any]] = {}
        games = {g.name: g for g in self.curriculum.games}
        version = self.step - 1  # the policy this step's episodes were played with
        trained = {s.turn for s in batch if s.version == version}
        carried = {s.turn for s in self.leftover if s.version == version}
        for game in sorted({e.game for e in episodes}):
            outcomes = getattr(games.get(game), "outcomes", False)
            game_eps = [e for e in episodes if e.game == game]
            for role, s in summarize(game_eps).items():
                key = f"{game}/{role}"
                row = {k: v for k, v in s.items() if outcomes or k in ("episodes", "mean_return")}
                played = [e for e in game_eps if e.ok and e.seats.get(role) == POLICY]
                row["policy_episodes"] = len(played)
                if played:
                    row["mean_return"] = statistics.fmean(e.returns[role] for e in played)
                    if outcomes:
                        for k in ("win", "draw", "loss", "invalid"):
                            row[k] = sum(_outcome(e, role) == k for e in played) / len(played)
                    row.update(_turn_metrics(played, role, trained, carried))
                by_role[key] = row
        for key, count in self.stale.items():
            reasons = by_role.setdefault(key, {}).setdefault("dropped", {})
            reasons["stale"] = reasons.get("stale", 0) + count
        for key, rows in _group(batch).items():
            adv = [s.advantage for s in rows]
            row = by_role.setdefault(key, {})
            row.update(samples=len(rows), adv_mean=statistics.fmean(adv),
                       adv_std=statistics.pstdev(adv) if len(adv) > 1 else 0.0,
                       response_length=statistics.fmean(len(s.completion_ids) for s in rows))
            row.update(learned.get("by_role", {}).get(key, {}))
        for (i, role), label in self.route.items():
            key = f"{self.config.curriculum[i].game}/{role}"
            if key in by_role:
                by_role[key]["estimator"] = label
        for est in self.estimators.values():
            for key, b in est.state_dict().get("baselines", {}).items():
                if key.count("/") != 1:
                    continue  # finer baselines (rae key="prompt"): too many to log
                by_role.setdefault(key, {})["baseline"] = b
        return {
            "step": self.step, "episodes": len(episodes), "quarantined": sum(not e.ok for e in episodes),
            "samples": len(batch), "leftover": len(self.leftover), "stale_dropped": sum(self.stale.values()),
            "tokens": tokens,
            "trained_tokens": learned.get("trained_tokens", 0), "seconds": round(seconds, 3),
            "elapsed": round(self.elapsed, 3),
            "episodes_per_s": len(episodes) / seconds if seconds else 0.0,
            "tokens_per_s": tokens / seconds if seconds else 0.0,
            "loss": learned.get("loss"), "grad_norm": learned.get("grad_norm"),
            "lr": learned.get("lr"), "entropy_coef": learned.get("entropy_coef"),
            "padding_fraction": learned.get("padding_fraction"), "skipped_update": bool(learned.get("nonfinite")),
            "roles": by_role, "games": _game_logs(episodes),
        }

    def _write(self, metrics: dict, episodes: list[Episode], batch: list[Sample]) -> None:
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics, default=_jsonable) + "\n")
        advantage = {s.turn: s.advantage for s in batch if s.version == self.step - 1}
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
            "pool": self.policy.pool, "population": self.policy.population.state_dict(),
            "nonfinite_streak": self.nonfinite_streak, "best": self.best,
        }

    def save(self) -> Path:
        return checkpoint.save(self.out / "checkpoints", self.step, self.policy.model, self.policy.tokenizer,
                               self.state_dict(), model_name=self.config.model.name, keep=self.config.checkpoint.keep)

    def _resume(self, path: Path) -> None:
        found = checkpoint.latest(path)
        if found is None:
            raise FileNotFoundError(f"--resume {path}: no checkpoint found (expected checkpoints/step-N/)")
        state = checkpoint.load_state(found)
        if self.data_parallel is None or self.data_parallel.holds_whole_model:  # fsdp, ranks > 0: shards only
            self.policy.load_checkpoint(found)
        self.learner.load_state_dict(state["optimizer"])  # fsdp: also rank 0's weights into every rank's shards
        for label, s in state["estimators"].items():
            if label not in self.estimators:
                raise ValueError(f"--resume {found}: the checkpoint has estimator {label!r}, which this config "
                                 f"does not use (it uses {', '.join(self.estimators)})")
            self.estimators[label].load_state_dict(s)
        self.curriculum.load_state_dict(state["curriculum"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.leftover = [Sample(**s) for s in state["leftover"]]
        self.policy.pool = state["pool"]
        if "population" in state:
            self.policy.population.load_state_dict(state["population"])
        else:  # a checkpoint from before populations: its pool, steps unknown
            for _ in state["pool"]:
                self.policy.population.add(0)
        self.best = state.get("best")
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.nonfinite_streak = state["nonfinite_streak"]
        for name in ("metrics.jsonl", "episodes.jsonl"):
            _truncate_log(self.out / name, self.step)
        print(f"rolekit: resumed from {found} at step {self.step}", file=sys.stderr)


def _truncate_log(path: Path, step: int) -> None:
    """Keep only the lines of a run log up to ``step``: a run resumed from an older
    checkpoint rewrites the steps after it, and must not log them twice."""
    if not path.is_file():
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except (json.JSONDecodeError, AttributeError):
                continue  # a line cut short by a kill
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


# --- helpers ----------------------------------------------------------------------------------


def _trained_roles(episode: Episode) -> list[str]:
    """The roles of ``episode`` whose turns may train: those the policy played, unless the
    episode was quarantined or an observer dropped it."""
    if not episode.ok or episode.info.get("dropped"):
        return []
    return [role for role, who in episode.seats.items() if who == POLICY]


def _game_logs(episodes: list[Episode]) -> dict[str, dict[str, float]]:
    """What the games measured (``table.log``), per game: each key's mean over the step's
    episodes that logged it, and how many did (``key/n``)."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for e in episodes:
        for key, x in e.logs.items():
            values[e.game][key].append(x)
    return {game: {k: v for key, xs in sorted(logged.items())
                   for k, v in ((key, statistics.fmean(xs)), (f"{key}/n", len(xs)))}
            for game, logged in sorted(values.items())}


def _outcome(episode: Episode, role: str) -> str:
    if episode.info.get("invalid") == role:
        return "invalid"
    winner = episode.info.get("winner")
    return "draw" if winner is None else "win" if winner == role else "loss"


def _turn_metrics(played: list[Episode], role: str, trained: set[int], carried: set[int]) -> dict[str, Any]:
    """Per-turn figures of ``role``'s policy turns: count, mean credit per turn, and the
    turns the game marked invalid or dropped (and the estimators dropped: zero_advantage),
    by reason. ``trained``/``carried``: turn ids in this step's batch / kept for the next."""
    turns = [(e, t) for e in played for t in e.turns if t.role == role and t.responder == POLICY]
    if not turns:
        return {"turns": 0}
    invalid: dict[str, int] = defaultdict(int)
    dropped: dict[str, int] = defaultdict(int)
    for e, t in turns:
        if t.id in e.invalid:
            invalid[e.invalid[t.id]] += 1
        if t.id in e.dropped:
            dropped[e.dropped[t.id]] += 1
    trainable = [t for e in played for t in policy_turns(e, role)]
    untrained = sum(t.id not in trained and t.id not in carried for t in trainable)
    if untrained:
        dropped["zero_advantage"] += untrained
    out: dict[str, Any] = {"turns": len(turns),
                           "reward_per_turn": statistics.fmean(e.turn_reward(t) for e, t in turns),
                           "invalid_turns": sum(invalid.values()) / len(turns)}
    if invalid:
        out["invalid_reasons"] = dict(invalid)
    if dropped:
        out["dropped"] = dict(dropped)
    return out


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
        if "win" in row:  # a game with outcomes: its return and invalid-move rate
            parts.append(f"{key} R={row['mean_return']:+.2f} inv={row.get('invalid', 0):.2f}")
        elif "reward_per_turn" in row:
            parts.append(f"{key} r/turn={row['reward_per_turn']:+.2f} inv={row.get('invalid_turns', 0):.2f}")
    if m.get("stale_dropped"):
        parts.append(f"stale {m['stale_dropped']}")
    return "  ".join(parts)


def _line(m: dict) -> str:
    loss = f"{m['loss']:+.4f}" if m.get("loss") is not None else "-"
    return f"step {m['step']:>4}  eps {m['episodes']:>3}  samples {m['samples']:>3}  loss {loss}  " + _status(m) \
        + _eval_line(m)


def _final_line(best: dict[str, Any], history: list[dict]) -> str:
    """The run's last evaluation next to its best (checkpoints/best), on the kept metric."""
    last = next((m for m in reversed(history) if isinstance(m.get("eval"), dict)), None)
    final = checkpoint.metric_value(last["eval"], best["metric"]) if last else None
    line = f"rolekit: {best['metric']}: final {final:.4f} (step {last['step']})" if final is not None else \
        f"rolekit: {best['metric']}:"
    line += f"; best {best['value']:.4f} (step {best['step']}, checkpoints/best)"
    average = last and checkpoint.metric_value(last["eval"], best["metric"].replace(
        "/exploitability", "/average/exploitability")) if best["metric"].endswith("/exploitability") else None
    if average is not None:
        line += f"; average policy {average:.4f}"
    return line


def _eval_line(m: dict) -> str:
    line = "" if m.get("step") else "step    0  (untrained)"
    for game, res in (m.get("eval") or {}).items():
        if not isinstance(res, dict):  # the whole evaluation failed
            line += "  | eval FAILED"
            continue
        for k, v in res.items():
            if k == "exploitability":
                line += f"  | eval {game} exploitability {v['exploitability']:.3f}"
            elif k == "average" and "exploitability" in v:
                line += f" (average policy {v['exploitability']:.3f})"
            elif isinstance(v, dict) and "win" in v:
                line += f"  | eval {game} vs {k}: win {v['win']:.2f}"
            elif isinstance(v, dict):
                figures = [f"{name} {x:.3f}" for name, x in v.items() if isinstance(x, float)][:2]
                line += f"  | eval {game} {k}: {', '.join(figures)}" if figures else ""
            elif k == "error":
                line += f"  | eval {game} FAILED"
    return line
