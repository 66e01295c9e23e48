"""Training configuration: small frozen attrs classes loaded from TOML with cattrs.

Every field is documented where it is declared. Untrusted input (TOML, ``--set``) is
converted and validated here, at the edge; an unknown or mistyped key is a one-line
error naming the key and the closest valid one.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any

import attrs
import cattrs

from rolekit.rollout import parse_value


class ConfigError(ValueError):
    """A bad configuration: the message names the key."""


def _positive(instance, attribute, value):
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


def _non_negative(instance, attribute, value):
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def _backend(name) -> None:
    if name not in ("hf", "vllm"):
        close = difflib.get_close_matches(str(name), ["hf", "vllm"], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"backend must be 'hf' or 'vllm', got {name!r}{hint}")


@attrs.frozen
class ModelConfig:
    name: str = "smollm2-135m-instruct"  # embedded default, "tiny-random", or a model directory
    device: str = "cpu"  # "cpu" or "cuda"; fp32 on CPU, bf16 on CUDA
    bf16: bool | None = None  # forward passes under bf16 autocast (trained weights and AdamW stay fp32; a LoRA run's frozen base is bf16); None: on CUDA only. On a CPU with AMX, True makes generation and scoring ~2x faster and a Kuhn step 1.27x (BENCHMARKS "bf16 on the CPU")


@attrs.frozen
class LoraConfig:
    enabled: bool = True  # False: full fine-tuning
    r: int = attrs.field(default=16, validator=_positive)
    alpha: int = attrs.field(default=32, validator=_positive)
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@attrs.frozen
class RolloutConfig:
    samples_per_step: int = attrs.field(default=64, validator=_positive)  # policy turns trained on per step
    concurrency: int = attrs.field(default=64, validator=_positive)  # episodes alive at once
    batch_size: int = attrs.field(default=64, validator=_positive)  # max sequences per generate call
    temperature: float = attrs.field(default=1.0, validator=_non_negative)
    top_p: float = 1.0
    # generation budget of an ask that sets none (turn-based games in terse mode use it); each
    # sample keeps the budget it was generated under, the ``constant`` aggregation's denominator
    max_new_tokens: int = attrs.field(default=16, validator=_positive)
    max_sample_age: int = attrs.field(default=1, validator=_non_negative)  # samples carried to a later step: at most this many policies old (older ones are dropped, counted as stale)
    # what generates: "hf" (transformers, CPU or CUDA) or "vllm" (extra rolekit[vllm]; the engine
    # runs in this process and is fed the new adapter or weights after each update; README "Scaling up")
    backend: str = attrs.field(default="hf", validator=lambda i, a, v: _backend(v))
    # each ask samples from its own seed (from the episode's seed), not the global torch RNG: an
    # episode then plays the same however asks are batched or spread over Ray workers (which turn
    # it on by themselves); off keeps the global-RNG runs of before
    seeded_sampling: bool = False


@attrs.frozen
class AlgorithmConfig:
    steps: int = attrs.field(default=100, validator=_positive)
    max_minutes: float | None = None  # wall-clock budget of one invocation: stop (evaluate, save) after the step that crosses it
    lr: float = attrs.field(default=1e-4, validator=_positive)  # AdamW learning rate
    lr_final: float | None = attrs.field(default=None, validator=attrs.validators.optional(_non_negative))  # linear from lr at step 0 to this at the last step (None: constant)
    weight_decay: float = 0.0
    ppo_epochs: int = attrs.field(default=1, validator=_positive)  # passes over each rollout batch
    clip_eps: float = attrs.field(default=0.2, validator=_positive)  # PPO clip range epsilon
    aggregation: str = attrs.field(default="constant", validator=attrs.validators.in_(
        ("constant", "token_mean", "seq_mean")))  # how token losses are summed (constant: Dr. GRPO)
    kl_beta: float = attrs.field(default=0.0, validator=_non_negative)  # weight of KL to the reference
    entropy_coef: float = attrs.field(default=0.0, validator=_non_negative)  # bonus on the policy's entropy (choices: over the legal answers)
    entropy_coef_final: float | None = attrs.field(default=None, validator=attrs.validators.optional(_non_negative))  # linear from entropy_coef to this at the last step (None: constant)
    decay_from: int = attrs.field(default=0, validator=_non_negative)  # the step at which lr_final / entropy_coef_final's linear decay begins (constant before)
    kl_estimator: str = attrs.field(default="k3", validator=attrs.validators.in_(("k1", "k2", "k3")))
    max_grad_norm: float = attrs.field(default=1.0, validator=_positive)
    micro_batch_tokens: int = attrs.field(default=1024, validator=_positive)  # learner tokens per micro-batch (memory)
    recompute_logprobs: bool | None = None  # old logprobs from the learner's epoch-0 pass, no extra pass (True) or generation (False); None: where forward passes run in bf16 (CUDA, model.bf16), whose generation logprobs differ from the learner's
    advantage: str = "rae"  # default estimator: rae, grpo, role_norm, raw (or a plugin's)
    advantage_options: dict[str, Any] = attrs.Factory(dict)  # e.g. {decay = 0.95} for rae
    max_nonfinite_steps: int = 3  # abort after this many consecutive non-finite losses


@attrs.frozen
class GameConfig:
    game: str  # a registered game name (see `rolekit games`)
    weight: float = attrs.field(default=1.0, validator=_positive)  # sampling weight in the curriculum
    options: dict[str, Any] = attrs.Factory(dict)  # passed to the game's constructor
    seats: dict[str, str] = attrs.Factory(dict)  # role -> "policy" | "scripted:NAME" | "snapshot"
    alternate: bool = True  # rotate the seat map every episode (policy plays every seat)
    mirror: bool = False  # play each deal twice with seats swapped
    # this game's estimator: one name, or a table role -> name (e.g. {questioner = "role_norm",
    # responder = "grpo"}); roles it leaves out use algorithm.advantage
    advantage: Any = attrs.field(default=None, validator=lambda i, a, v: _estimator_choice(v))
    advantage_options: dict[str, dict[str, Any]] = attrs.Factory(dict)  # per estimator name: {rae = {decay = 0.9}}
    start_step: int = 0  # active from this step ...
    end_step: int | None = None  # ... until (excluding) this one


@attrs.frozen
class SnapshotConfig:
    every: int = attrs.field(default=10, validator=_positive)  # add the policy to the pool every N steps
    pool_size: int = attrs.field(default=5, validator=_positive)  # keep the N most recent snapshots
    # the mixture a "snapshot" seat draws from (one member per episode; the average policy):
    # "uniform", "recency" (newest weighs 1, each older recency_decay times the next) or
    # "elo" (10 ** (rating / 400), ratings from the games each snapshot played the policy)
    weighting: str = attrs.field(default="uniform", validator=attrs.validators.in_(("uniform", "recency", "elo")))
    recency_decay: float = attrs.field(default=0.8, validator=_positive)  # weighting = "recency"
    elo_k: float = attrs.field(default=32.0, validator=_positive)  # weighting = "elo": rating step per game


@attrs.frozen
class EvalConfig:
    every: int = 10  # steps between evaluations (0: never)
    episodes: int = attrs.field(default=64, validator=_positive)  # per game and opponent
    opponents: tuple[str, ...] = ("random",)  # scripted opponents to measure win rates against
    exploitability: bool = True  # Kuhn Poker: exact exploitability of the policy
    at_start: bool = False  # also evaluate the untrained policy, logged as step 0 (the "before" figure)
    average: bool = True  # Kuhn Poker: also the exact exploitability of the snapshot pool's average policy


@attrs.frozen
class CheckpointConfig:
    every: int = 10  # steps between checkpoints (0: only at the end)
    keep: int = attrs.field(default=3, validator=_positive)  # most recent checkpoints kept
    # also keep checkpoints/best, the checkpoint whose evaluation scored best on this metric:
    # "auto" (a game's exploitability where it has one, else the first evaluation's win
    # rate), "" (no best checkpoint), or a path into the evaluation, e.g.
    # "kuhn_poker/exploitability" or "tictactoe/minimax/draw"; exploitability, loss and
    # invalid rates are minimised, everything else maximised
    keep_best: str = "auto"


@attrs.frozen
class LoggingConfig:
    episodes_per_step: int = 4  # transcripts written to episodes.jsonl per step
    quiet: bool = False  # plain log lines instead of a progress display
    # Weights & Biases (the wandb extra): the TensorBoard scalars and the resolved config each
    # step, the report and sampled transcripts at the end; WANDB_MODE=offline writes RUN_DIR/wandb only
    wandb: bool = False
    wandb_project: str = "rolekit"  # the W&B project
    wandb_name: str | None = None  # the W&B run name (None: the run directory's name)
    wandb_tags: tuple[str, ...] = ()  # W&B run tags


def _learner(name) -> None:
    if name not in ("ddp", "zero", "fsdp"):
        raise ValueError(f"learner must be 'ddp', 'zero' or 'fsdp', got {name!r}")


@attrs.frozen
class DistributedConfig:
    """Rollouts across Ray workers and the learner's ranks (``rolekit.distributed``). The
    learner goes data-parallel by being launched with torchrun, not by a key here."""

    # None: generate in this process (no Ray); "local": start a Ray cluster here; "auto" or
    # "HOST:PORT": join a running one (`ray start --head`); also `rolekit train --ray-address`
    ray_address: str | None = None
    rollout_workers: int = attrs.field(default=2, validator=_positive)  # Ray actors generating for the policy, each with its own model copy and backend
    worker_cpus: float = attrs.field(default=1.0, validator=_positive)  # CPUs Ray reserves per worker (and the torch threads it runs)
    worker_gpus: float = attrs.field(default=0.0, validator=_non_negative)  # GPUs per worker (a fraction shares one)
    num_cpus: int | None = None  # ray_address = "local": CPUs the started cluster offers (None: all of them)
    # under torchrun: "ddp", every rank holds the whole AdamW state; "zero", each rank holds
    # 1/N of it and of the summed gradient (ZeRO stage 2; the weights stay whole on every rank);
    # "fsdp", each rank holds 1/N of the weights too (torch's FSDP2; rank 0 keeps a whole copy
    # to play with, refreshed after each step; prompt sharing is off in the learner)
    learner: str = attrs.field(default="ddp", validator=lambda i, a, v: _learner(v))


@attrs.frozen
class TrainConfig:
    curriculum: tuple[GameConfig, ...] = attrs.field(validator=lambda i, a, v: _nonempty(v))  # games + seat maps
    seed: int = 0
    model: ModelConfig = ModelConfig()
    lora: LoraConfig = LoraConfig()
    rollout: RolloutConfig = RolloutConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    snapshots: SnapshotConfig = SnapshotConfig()
    eval: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    logging: LoggingConfig = LoggingConfig()
    distributed: DistributedConfig = DistributedConfig()


def _estimator_choice(value) -> None:
    if value is None or isinstance(value, str):
        return
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return
    raise ValueError(f"advantage must be an estimator name or a table role -> name, got {value!r}")


def _nonempty(curriculum) -> None:
    if not curriculum:
        raise ValueError("curriculum needs at least one [[curriculum]] game")


# --- loading ---------------------------------------------------------------------------------

_converter = cattrs.Converter(forbid_extra_keys=True)


def _check_keys(cls, data: Any, path: str) -> None:
    """Walk ``data`` against ``cls`` and name the first unknown key with its closest match."""
    if not attrs.has(cls) or not isinstance(data, dict):
        return
    fields = {f.name: f for f in attrs.fields(cls)}
    for key, value in data.items():
        where = f"{path}{key}"
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean '{path}{close[0]}'?" if close else f" (valid: {', '.join(fields)})"
            raise ConfigError(f"unknown config key '{where}'{hint}")
        ftype = fields[key].type
        if isinstance(ftype, str):
            ftype = {c.__name__: c for c in _SECTIONS}.get(ftype.split("[")[-1].split(",")[0].strip(" ]"), ftype)
        if key == "curriculum" and isinstance(value, list):
            for i, item in enumerate(value):
                _check_keys(GameConfig, item, f"curriculum[{i}].")
        elif attrs.has(ftype):
            _check_keys(ftype, value, f"{where}.")


_SECTIONS = (ModelConfig, LoraConfig, RolloutConfig, AlgorithmConfig, GameConfig, SnapshotConfig, EvalConfig,
             CheckpointConfig, LoggingConfig, DistributedConfig, TrainConfig)


def from_dict(data: dict[str, Any]) -> TrainConfig:
    attrs.resolve_types(TrainConfig)
    for cls in _SECTIONS:
        attrs.resolve_types(cls)
    _check_keys(TrainConfig, data, "")
    try:
        return _converter.structure(data, TrainConfig)
    except cattrs.BaseValidationError as exc:
        raise ConfigError(_first_error(exc)) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None


def _first_error(exc: BaseException, path: str = "") -> str:
    """The innermost cause of a cattrs error, with the key path that led to it."""
    for sub in getattr(exc, "exceptions", ()):
        note = next((n for n in getattr(sub, "__notes__", []) if "@" in str(n) or "attribute" in str(n)), None)
        name = getattr(note, "name", None) if note is not None else None
        index = getattr(note, "index", None) if note is not None else None
        step = f"{path}.{name}" if name else f"{path}[{index}]" if index is not None else path
        return _first_error(sub, step.lstrip("."))
    return f"config key '{path}': {exc}" if path else str(exc)


def set_key(data: dict[str, Any], dotted: str, value: str) -> None:
    """Apply ``--set a.b.c=value`` (value parsed as TOML) to a nested dict."""
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        if part.isdigit() and isinstance(node, list):
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = parse_value(value)
    else:
        node[last] = parse_value(value)


def load(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        set_key(data, key.strip(), value.strip())
    return from_dict(data)


def to_dict(config: TrainConfig) -> dict[str, Any]:
    return _converter.unstructure(config)


def to_toml(config: TrainConfig) -> str:
    """The resolved config as TOML (written to the run directory)."""
    data = to_dict(config)
    lines = [f"seed = {_toml(data.pop('seed'))}"]
    curriculum = data.pop("curriculum")
    for section, values in data.items():
        lines.append(f"\n[{section}]")
        lines += [f"{k} = {_toml(v)}" for k, v in values.items() if v is not None]
    for game in curriculum:
        lines.append("\n[[curriculum]]")
        lines += [f"{k} = {_toml(v)}" for k, v in game.items() if v is not None]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _toml(k)
