"""Weights & Biases logging (``logging.wandb = true``; the ``wandb`` extra).

A run logs what TensorBoard gets -- each step's scalar metrics under the same tags
(``report.scalars``: ``train/loss``, ``GAME/ROLE/mean_return``, ``eval/GAME/...``) at
the step's number -- and the resolved config as the W&B run config. When training ends
it adds the run's HTML report as an artifact (``report``) and the sampled transcripts
(the report's sample of ``episodes.jsonl``) as a table (``transcripts``).

W&B files go under ``RUN_DIR/wandb``. With ``WANDB_MODE=offline`` nothing is sent
(``wandb sync RUN_DIR/wandb/offline-run-*`` uploads it later); a resumed rolekit run
continues the same W&B run (its id is kept in ``RUN_DIR/wandb-run-id``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rolekit import report

RUN_ID_FILE = "wandb-run-id"
MAX_TEXT = 2000  # characters of one prompt or answer kept in the transcripts table


class WandB:
    """One W&B run for one rolekit run directory (the driver process only)."""

    def __init__(self, run_dir: str | Path, config: dict[str, Any], *, project: str, name: str | None = None,
                 tags: tuple[str, ...] = (), resume: bool = False):
        try:
            import wandb
        except ImportError:
            raise ValueError("logging.wandb needs the wandb package: pip install 'rolekit[wandb]'") from None
        self.wandb = wandb
        self.run_dir = Path(run_dir)
        id_file = self.run_dir / RUN_ID_FILE
        run_id = id_file.read_text().strip() if resume and id_file.exists() else None  # None: a new W&B run
        self.run = wandb.init(project=project, name=name or self.run_dir.resolve().name, tags=list(tags),
                              config=config, dir=str(self.run_dir), id=run_id,
                              resume="allow" if run_id else None, settings=wandb.Settings(quiet=True, console="off"))
        id_file.write_text(self.run.id)

    def log(self, metrics: dict) -> None:
        """One step's scalars, at the step's number (the same tags as TensorBoard)."""
        self.run.log(report.scalars(metrics), step=int(metrics.get("step", 0)))

    def finish(self) -> None:
        """Attach the report and the transcripts, then close the run (offline: flush to disk)."""
        path = report.refresh(self.run_dir)
        if path is not None:
            artifact = self.wandb.Artifact(f"report-{self.run.id}", type="report",
                                           description="rolekit's HTML run report (curves, episodes, config)")
            artifact.add_file(str(path), name="report.html")
            self.run.log_artifact(artifact)
        episodes, _ = report.sample_episodes(self.run_dir / "episodes.jsonl")
        if episodes:
            self.run.log({"transcripts": self.wandb.Table(columns=list(TRANSCRIPT_COLUMNS),
                                                          data=[transcript_row(ep) for ep in episodes])})
        self.run.finish()


TRANSCRIPT_COLUMNS = ("step", "game", "seed", "returns", "turns", "transcript")


def transcript_row(episode: dict) -> list:
    """One sampled episode as a table row: where it came from, each role's return, and its
    turns as text (role, prompt, answer, reward)."""
    parts = []
    for turn in episode.get("turns") or ():
        prompt = turn.get("prompt")
        if not isinstance(prompt, str):
            prompt = json.dumps(prompt, ensure_ascii=False)
        parts.append(f"## {turn.get('role')} ({turn.get('responder')}), reward {turn.get('reward')}\n"
                     f"> {prompt[-MAX_TEXT:]}\n{str(turn.get('text', ''))[:MAX_TEXT]}")
    return [episode.get("step"), episode.get("game"), episode.get("seed"),
            json.dumps(episode.get("returns") or {}), len(episode.get("turns") or ()), "\n\n".join(parts)]
