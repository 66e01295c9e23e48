"""Taking a trained model elsewhere: ``rolekit export RUN_DIR_OR_CHECKPOINT --out DIR [--merge]``.

A checkpoint is a peft adapter directory (or, under full fine-tuning, a model directory)
plus rolekit's own ``trainer_state.pt``. An export is what other tools load without
rolekit:

* ``--merge``: the LoRA adapter merged into its base with peft's ``merge_and_unload``
  and saved as a plain Hugging Face model directory (safetensors), which
  ``AutoModelForCausalLM.from_pretrained`` and vLLM load as is. A full fine-tuning
  checkpoint is already such a model and is saved the same way.
* without ``--merge``: the adapter directory itself (peft loads it on top of its base).

Both get the tokenizer with its chat template, a ``generation_config.json`` that stops at
the end of an assistant turn (rolekit's stop tokens) and samples nothing unless asked,
and a model card (``README.md``) naming the base model, the games and roles trained, the
steps, the final and best evaluation figures (from the run's ``metrics.jsonl``) and the
resolved config. Nothing of rolekit's trainer state is copied.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from rolekit import checkpoint
from rolekit.checkpoint import atomic_dir

BEST = "best"  # checkpoints/best: the best-evaluated checkpoint, where the run kept one
_LOWER_IS_BETTER = ("exploitability", "loss", "invalid")  # as checkpoint.keep_best reads evaluations
_COUNTS = ("episodes", "quarantined")  # evaluation sizes, not figures (nor a strategy's infosets)
_NOT_EXPORTED = {checkpoint.STATE_FILE, "rolekit.json", "README.md"}


def resolve(source: str | Path, *, best: bool = False) -> tuple[Path, Path | None]:
    """The checkpoint to export and its run directory (None if it is not inside one).

    ``source`` is a checkpoint directory or a run directory; of a run, the newest
    checkpoint, or ``checkpoints/best`` with ``best``."""
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"export: no such run or checkpoint directory: {source}")
    if (source / checkpoint.STATE_FILE).exists():
        if best:
            raise ValueError(f"export: --best picks a run's best checkpoint, but {source} is a checkpoint")
        run = source.parent.parent if source.parent.name == "checkpoints" else None
        return source, run if run is not None and (run / "config.toml").exists() else None
    if best:
        found = source / "checkpoints" / BEST
        if not (found / checkpoint.STATE_FILE).exists():
            raise FileNotFoundError(f"export: {source} kept no best checkpoint ({found} is missing; "
                                    f"see checkpoint.keep_best)")
        return found, source
    found = checkpoint.latest(source)
    if found is None:
        raise FileNotFoundError(f"export: {source} holds no checkpoint (expected checkpoints/step-N/ "
                                f"with {checkpoint.STATE_FILE})")
    return found, source


def export(source: str | Path, out: str | Path, *, merge: bool = False, best: bool = False) -> Path:
    """Write the export of ``source`` (a run or checkpoint directory) to ``out``; return ``out``.

    The directory is written beside ``out`` and renamed into place, so a failed export
    leaves nothing half-written; an existing non-empty ``out`` is refused (ValueError)."""
    from rolekit.models import load_model

    ckpt, run = resolve(source, best=best)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"export: {out} exists and is not empty")
    if out.is_dir():
        out.rmdir()
    info = _json(ckpt / "rolekit.json")
    loaded = load_model(str(ckpt))
    adapter = hasattr(loaded.model, "peft_config")
    kind = ("merged" if merge else "adapter") if adapter else "full"

    def write(tmp: Path) -> None:
        if kind == "adapter":  # the adapter as trained, byte for byte
            for path in ckpt.iterdir():
                if path.is_file() and path.name not in _NOT_EXPORTED:
                    shutil.copy2(path, tmp / path.name)
            generation_config(loaded.tokenizer).save_pretrained(tmp)
        else:
            model = loaded.model.merge_and_unload() if kind == "merged" else loaded.model
            model.generation_config = generation_config(loaded.tokenizer)
            model.save_pretrained(tmp, safe_serialization=True)
            loaded.tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(ckpt, run, info, kind=kind), encoding="utf-8")

    return atomic_dir(out, write)


def generation_config(tokenizer):
    """Greedy and plain (no sampling knob a caller did not pass), stopping where rolekit's
    generation stops: the tokenizer's end of sequence and the chat template's end of turn."""
    from transformers import GenerationConfig

    from rolekit.chat import ChatTokenizer

    stops = sorted(ChatTokenizer(tokenizer).eos_ids)
    return GenerationConfig(bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=stops[0] if len(stops) == 1 else stops)


# --- the model card -----------------------------------------------------------------------------------


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def eval_figures(metrics: list[dict]) -> tuple[dict[str, tuple[int, float]], dict[str, tuple[int, float]]]:
    """The final and the best value of every evaluation figure over a run, each with its step:
    ``{"kuhn_poker/exploitability": (step, value)}``. Exploitability, loss and invalid rates
    count as better lower, everything else higher (as ``checkpoint.keep_best`` does)."""
    from rolekit.report import scalars

    final: dict[str, tuple[int, float]] = {}
    best: dict[str, tuple[int, float]] = {}
    for m in metrics:
        if not isinstance(m.get("eval"), dict):
            continue
        step = int(m.get("step", 0))
        for tag, value in scalars({"eval": m["eval"]}).items():
            name = tag.removeprefix("eval/")
            parts = name.split("/")
            if not math.isfinite(value) or "infosets" in parts or parts[-1] in _COUNTS:
                continue
            final[name] = (step, value)
            lower = any(word in name.rsplit("/", 1)[-1] for word in _LOWER_IS_BETTER)
            if name not in best or (value < best[name][1] if lower else value > best[name][1]):
                best[name] = (step, value)
    return final, best


def _games(config: dict, metrics: list[dict]) -> list[tuple[str, list[str]]]:
    """(game, its roles) in curriculum order; roles as the metrics name them (game/role)."""
    roles: dict[str, list[str]] = {}
    for m in metrics:
        for key in m.get("roles") or {}:
            game, _, role = key.partition("/")
            if role and role not in roles.setdefault(game, []):
                roles[game].append(role)
    games = [g.get("game") for g in config.get("curriculum", []) if g.get("game")]
    games += [g for g in roles if g not in games]
    return [(g, roles.get(g, [])) for g in games]


def model_card(ckpt: Path, run: Path | None, info: dict, *, kind: str) -> str:
    """The exported directory's README.md (Hugging Face model card: YAML front matter + text)."""
    from rolekit.report import read_config, read_jsonl

    config, config_text = read_config(run) if run is not None else ({}, "")
    metrics = [m for m in read_jsonl(run / "metrics.jsonl")] if run is not None else []
    base = info.get("model") or config.get("model", {}).get("name", "unknown")
    step = info.get("step")
    games = _games(config, metrics)
    what = {"merged": "the LoRA adapter merged into its base model (a plain transformers model directory)",
            "adapter": "a peft LoRA adapter (load it on top of the base model)",
            "full": "a fully fine-tuned model (a plain transformers model directory)"}[kind]
    lines = ["---", f"base_model: {json.dumps(str(base))}", "library_name: " + ("peft" if kind == "adapter"
                                                                              else "transformers"),
             "tags: [rolekit, reinforcement-learning, self-play]", "---", "",
             f"# {run.name if run is not None else ckpt.name} (rolekit)", "",
             f"Trained by self-play with rolekit; this directory is {what}.", "",
             f"- **Base model**: `{base}`"]
    if kind == "adapter" and base in ("tiny-random", "smollm2-135m-instruct"):
        lines.append("  (a rolekit model name: `rolekit export --merge` writes a model that loads without rolekit)")
    lines.append(f"- **Checkpoint**: `{ckpt.name}`, after {step if step is not None else '?'} training steps"
                 + (f" of {config.get('algorithm', {}).get('steps')}" if config.get("algorithm") else ""))
    if games:
        lines.append("- **Games and role graphs**: " + "; ".join(
            f"`{g}` ({', '.join(roles) if roles else 'roles not logged'})" for g, roles in games))
    kept = _json(run / "checkpoints" / BEST / "rolekit.json").get("best") if run is not None else None
    if isinstance(kept, dict) and {"metric", "value", "step"} <= kept.keys():
        lines.append(f"- **Best checkpoint** of the run (`checkpoints/best`, `rolekit export --best`): step "
                     f"{kept['step']}, {kept['metric']} = {kept['value']:.4g}")
    final, best = eval_figures(metrics)
    lines += ["", "## Evaluation", ""]
    if final:
        lines += ["| figure | final (step) | best (step) |", "|---|---|---|"]
        for name, (s, v) in final.items():
            bs, bv = best[name]
            lines.append(f"| {name} | {v:.4g} ({s}) | {bv:.4g} ({bs}) |")
    else:
        lines.append("No evaluation was logged for this run.")
    lines += ["", "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              'tokenizer = AutoTokenizer.from_pretrained("THIS_DIR")']
    if kind == "adapter":
        lines += ["from peft import PeftModel", 'model = PeftModel.from_pretrained(AutoModelForCausalLM.'
                  'from_pretrained("BASE_MODEL_DIR"), "THIS_DIR")']
    else:
        lines.append('model = AutoModelForCausalLM.from_pretrained("THIS_DIR")')
    lines += ['ids = tokenizer.apply_chat_template([{"role": "user", "content": "..."}], '
              'add_generation_prompt=True, return_tensors="pt", return_dict=True)',
              "print(tokenizer.decode(model.generate(**ids, max_new_tokens=64)[0]))", "```", ""]
    if config_text:
        lines += ["## Training config (resolved)", "", "```toml", config_text.rstrip(), "```", ""]
    return "\n".join(lines)


# --- rolekit export -----------------------------------------------------------------------------------


def cmd_export(args) -> int:
    path = export(args.source, args.out, merge=args.merge, best=args.best)
    print(f"rolekit: exported {'a merged model' if args.merge else 'the checkpoint'} to {path}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a checkpoint as a Hugging Face model directory with a "
                                             "model card (--merge: LoRA merged into the base)")
    p.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT",
                   help="a run directory (its newest checkpoint) or a checkpoint directory")
    p.add_argument("--out", required=True, help="the directory to write (must not exist or be empty)")
    p.add_argument("--merge", action="store_true",
                   help="merge the LoRA adapter into the base model (loads without peft or rolekit)")
    p.add_argument("--best", action="store_true", help="export the run's checkpoints/best instead of the newest")
    p.set_defaults(func=cmd_export)
