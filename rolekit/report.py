"""Seeing a run: one self-contained HTML report, and TensorBoard scalars.

``build(run_dir)`` reads what the engine writes into a run directory (``config.toml``,
``metrics.jsonl``, ``episodes.jsonl``) and writes ``run_dir/report.html``:

* a summary (model, games, steps, wall time, tokens, final per-role and evaluation figures);
* curves per game and role, drawn here as inline SVG (no chart library, nothing fetched);
* an episode browser: sampled transcripts embedded as JSON and drawn by a short script,
  seat by seat, with boards and cards for the built-in games (the page's frame, styles and
  script are package data in ``rolekit/report_assets/``). Transcripts are model
  output: the script only ever sets ``textContent``, and the JSON cannot close its tag;
* the resolved config.

Transcripts are sampled (evenly spaced steps, a few per game per step, a byte budget), so
the report of a long run stays small and opens fast. ``refresh`` is what training calls
after each checkpoint: it never raises. ``TensorBoard`` writes the same scalars as event
files (the optional ``tensorboard`` extra).
"""

from __future__ import annotations

import functools
import html
import importlib.resources
import json
import math
import os
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Iterable, Iterator

REPORT = "report.html"
MAX_EPISODES = 300  # transcripts kept in a report
PER_GROUP = 2  # ... at most this many per (step, game)
MAX_EPISODE_BYTES = 6_000_000  # ... and at most this much JSON
MAX_TEXT = 6000  # characters kept of one prompt or answer
MAX_POINTS = 400  # points drawn per curve (longer runs are averaged into buckets)

# Per-role training metrics drawn per game: (key, title, y range or None for automatic).
ROLE_CURVES = (
    ("mean_return", "mean return", None),
    ("baseline", "RAE baseline", None),
    ("response_length", "response length (tokens)", None),
    ("adv_mean", "mean advantage", None),
    ("pg_loss", "policy-gradient loss", None),
    ("kl", "KL to reference", None),
    ("clip_fraction", "clip fraction", (0.0, 1.0)),
    ("entropy", "entropy", None),
    ("approx_kl_old", "approx. KL to the rollout policy", None),
)
OUTCOMES = ("win", "draw", "loss", "invalid")
OUTCOME_COLORS = {"win": "#16a34a", "draw": "#64748b", "loss": "#ea580c", "invalid": "#9333ea"}
# Whole-step metrics: (key, title).
STEP_CURVES = (
    ("loss", "loss"),
    ("grad_norm", "gradient norm"),
    ("tokens_per_s", "generated tokens / s"),
    ("episodes_per_s", "episodes / s"),
    ("seconds", "seconds per step"),
    ("padding_fraction", "padding fraction"),
)
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777")


# --- reading a run directory -------------------------------------------------------------------


def read_jsonl(path: Path) -> Iterator[dict]:
    """The objects of a JSON-lines file; a line that does not parse (a run still writing
    its last line) is skipped."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj


def read_config(run_dir: Path) -> tuple[dict, str]:
    """The resolved config as a dict, and its text ({} and "" if there is none)."""
    path = run_dir / "config.toml"
    if not path.exists():
        return {}, ""
    text = path.read_text(encoding="utf-8")
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError:
        return {}, text


def outcome_tags(ep: dict) -> list[str]:
    """How an episode ended, from the policy's side: policy_win, policy_loss, draw,
    invalid (someone moved illegally), error (quarantined)."""
    if ep.get("error"):
        return ["error"]
    info = ep.get("info") or {}
    seats = ep.get("seats") or {}
    policy = {r for r, who in seats.items() if who == "policy"}
    winner = info.get("winner")
    tags = []
    if winner is not None and winner in policy:
        tags.append("policy_win")
    if winner is not None and policy - {winner}:
        tags.append("policy_loss")
    if winner is None:
        tags.append("draw")
    if info.get("invalid") is not None:
        tags.append("invalid")
    return tags


def sample_episodes(path: Path, *, limit: int = MAX_EPISODES, per_group: int = PER_GROUP,
                    max_bytes: int = MAX_EPISODE_BYTES) -> tuple[list[dict], int]:
    """At most ``limit`` episodes of ``episodes.jsonl`` (and about ``max_bytes`` of JSON),
    and how many it holds.

    A file with no more than ``limit`` episodes is kept whole. Otherwise steps are taken
    evenly spaced (first and last included); within one (step, game) up to
    ``per_group`` episodes, one of each kind of ending in turn (invalid move, won or lost,
    draw, error) so that the browser's filters find something. Two passes over the file: the
    first keeps only an index, so a large file is never held in memory.
    """
    index = []  # (line number, step, game, kind, bytes)
    if path.exists():
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f):
                try:
                    ep = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(ep, dict):
                    continue
                tags = outcome_tags(ep)
                kind = next((t for t in ("error", "invalid", "policy_win", "policy_loss", "draw") if t in tags), "")
                index.append((n, ep.get("step", 0), str(ep.get("game", "?")), kind, len(line)))
    if not index:
        return [], 0
    groups: dict[tuple[int, str], list[tuple]] = {}
    for row in index:
        groups.setdefault((row[1], row[2]), []).append(row)
    steps = sorted({s for s, _ in groups})
    games = sorted({g for _, g in groups})
    if len(index) <= limit:
        chosen = index
    else:
        kept = sum(min(per_group, len(rows)) for rows in groups.values()) / len(steps)  # per step
        chosen = []
        for step in _evenly(steps, max(1, int(limit / kept))):
            for game in games:
                chosen += _varied(groups.get((step, game), []), per_group)
        chosen = _evenly(sorted(chosen), limit)
    total = sum(r[4] for r in chosen)
    if total > max_bytes:
        chosen = _evenly(chosen, max(1, int(len(chosen) * max_bytes / total)))
    wanted = {r[0] for r in chosen}
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            if n in wanted:
                out.append(_trim(json.loads(line)))
    return out, len(index)


def _evenly(items: list, k: int) -> list:
    """``k`` items spread evenly over ``items``, the first and the last included."""
    if k >= len(items):
        return list(items)
    if k == 1:
        return [items[-1]]
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


def _varied(rows: list[tuple], k: int) -> list[tuple]:
    """Up to ``k`` rows, one of each kind in turn, in file order."""
    by_kind: dict[str, list[tuple]] = {}
    for row in rows:
        by_kind.setdefault(row[3], []).append(row)
    out: list[tuple] = []
    while len(out) < k and any(by_kind.values()):
        for queue in by_kind.values():
            if queue and len(out) < k:
                out.append(queue.pop(0))
    return sorted(out)


def _trim(ep: dict) -> dict:
    """The episode with over-long strings cut (prompts and answers of a runaway model)."""
    def cut(x):
        if isinstance(x, str) and len(x) > MAX_TEXT:
            return x[:MAX_TEXT] + f"\n… [{len(x) - MAX_TEXT} more characters not kept in the report]"
        if isinstance(x, list):
            return [cut(v) for v in x]
        if isinstance(x, dict):
            return {k: cut(v) for k, v in x.items()}
        return x

    ep = cut(ep)
    ep["tags"] = outcome_tags(ep)
    return ep


# --- numbers --------------------------------------------------------------------------------------


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _fmt(x: float | None, digits: int = 3) -> str:
    """``x`` with about ``digits`` significant digits, without exponents for everyday sizes."""
    if x is None:
        return "–"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) < 0.01:
        return f"{x:.{digits}g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}".rstrip("0").rstrip(".") if decimals else f"{x:.0f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s % 60:02d}s" if m else f"{seconds:.1f}s"


def ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round numbers (1, 2, 2.5 or 5 × 10^k apart) within [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10)), key=lambda s: abs(math.log(s / raw)))
    first = math.ceil(lo / step - 1e-9) * step
    out = []
    v = first
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


def _bucket(points: list[tuple[float, float | None]], n: int) -> list[tuple[float, float | None]]:
    """At most ``n`` points: consecutive points averaged (gaps stay gaps)."""
    if len(points) <= n:
        return points
    size = len(points) / n
    out = []
    for i in range(n):
        chunk = points[int(i * size): int((i + 1) * size)]
        ys = [y for _, y in chunk if y is not None]
        out.append((sum(x for x, _ in chunk) / len(chunk), sum(ys) / len(ys) if ys else None))
    return out


def _smooth(points: list[tuple[float, float | None]]) -> list[tuple[float, float | None]]:
    """An exponential moving average over about 1/30 of the run (gaps are skipped)."""
    alpha = 2 / (max(1, len(points) // 30) + 1)
    out, avg = [], None
    for x, y in points:
        if y is not None:
            avg = y if avg is None else avg + alpha * (y - avg)
        out.append((x, avg if y is not None else None))
    return out


# --- charts (inline SVG) --------------------------------------------------------------------------


def chart(title: str, lines: list[tuple[str, str, list[tuple[float, float | None]]]], *,
          y_range: tuple[float, float] | None = None, refs: Iterable[tuple[float, str]] = (),
          width: int = 360, height: int = 190) -> str:
    """One chart: a title, a legend with each line's last value, and an SVG.

    ``lines`` are (label, colour, [(step, value or None)]); None breaks the line. Long
    lines are averaged into ``MAX_POINTS`` buckets and drawn faint under a smoothed copy.
    ``refs`` are horizontal reference lines (value, label). Returns "" if nothing to draw.
    """
    lines = [(label, color, pts) for label, color, pts in lines if any(y is not None for _, y in pts)]
    if not lines:
        return ""
    refs = list(refs)
    xs = [x for _, _, pts in lines for x, y in pts if y is not None]
    ys = [y for _, _, pts in lines for _, y in pts if y is not None] + [v for v, _ in refs]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y_range is not None:
        y0, y1 = min(y_range[0], min(ys)), max(y_range[1], max(ys))
    else:
        y0, y1 = min(ys), max(ys)
        pad = (y1 - y0) * 0.08 or max(abs(y0) * 0.1, 0.5)
        y0, y1 = y0 - pad, y1 + pad
    left, right, top, bottom = 46, 14, 8, 22
    pw, ph = width - left - right, height - top - bottom

    def px(x):
        return left + (x - x0) / (x1 - x0) * pw

    def py(y):
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">']
    for t in ticks(y0, y1):
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{py(t):.1f}" y2="{py(t):.1f}"/>'
                     f'<text class="ytick" x="{left - 4}" y="{py(t) + 3:.1f}">{_fmt(t)}</text>')
    for t in ticks(x0, x1, 5):
        if t == int(t):
            parts.append(f'<text class="xtick" x="{px(t):.1f}" y="{height - 6}">{int(t)}</text>')
    for value, label in refs:
        parts.append(f'<line class="ref" x1="{left}" x2="{width - right}" y1="{py(value):.1f}" '
                     f'y2="{py(value):.1f}"><title>{html.escape(label)}</title></line>'
                     f'<text class="reflabel" x="{width - right - 2}" y="{py(value) - 3:.1f}">'
                     f'{html.escape(label)}</text>')
    parts.append(f'<rect class="frame" x="{left}" y="{top}" width="{pw}" height="{ph}"/>')
    legend = []
    for label, color, pts in lines:
        drawn = _bucket(pts, MAX_POINTS)
        many = len(pts) > 40
        parts.append(_path(drawn, px, py, color, "faint" if many else "line"))
        if many:
            parts.append(_path(_smooth(drawn), px, py, color, "line"))
        else:
            parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.2" fill="{color}"/>'
                      for x, y in pts if y is not None]
        last = next(y for _, y in reversed(pts) if y is not None)
        legend.append(f'<span><i style="background:{color}"></i>{html.escape(label)} <b>{_fmt(last)}</b></span>')
    parts.append("</svg>")
    return (f'<figure class="chart"><figcaption>{html.escape(title)}</figcaption>'
            f'<div class="legend">{"".join(legend)}</div>{"".join(parts)}</figure>')


def _path(points, px, py, color, cls) -> str:
    d, pen = [], False
    for x, y in points:
        if y is None:
            pen = False
            continue
        d.append(f"{'L' if pen else 'M'}{px(x):.1f} {py(y):.1f}")
        pen = True
    return f'<path class="{cls}" stroke="{color}" d="{"".join(d)}"/>'


# --- the report's sections ---------------------------------------------------------------------------


def _series(metrics: list[dict], get) -> list[tuple[float, float | None]]:
    out = []
    for m in metrics:
        step = _num(m.get("step"))
        if step is None:
            continue
        try:
            out.append((step, _num(get(m))))
        except (KeyError, TypeError, AttributeError):
            out.append((step, None))
    return out


def _role_keys(metrics: list[dict]) -> dict[str, list[str]]:
    """game -> its roles, in order of first appearance."""
    games: dict[str, list[str]] = {}
    for m in metrics:
        for key in m.get("roles") or {}:
            game, _, role = key.partition("/")
            roles = games.setdefault(game, [])
            if role not in roles:
                roles.append(role)
    return games


def _eval_keys(metrics: list[dict]) -> dict[str, list[str]]:
    """game -> the opponents (and "exploitability") it was evaluated with."""
    games: dict[str, list[str]] = {}
    for m in metrics:
        for game, result in (m.get("eval") or {}).items():
            names = games.setdefault(game, [])
            for name in result if isinstance(result, dict) else ():
                if name not in names:
                    names.append(name)
    return games


def _exploitability(value: Any) -> float | None:
    return _num(value.get("exploitability") if isinstance(value, dict) else value)


def summary_facts(config: dict, metrics: list[dict], episodes_logged: int) -> list[tuple[str, str]]:
    last = metrics[-1] if metrics else {}
    planned = (config.get("algorithm") or {}).get("steps")
    step = last.get("step", 0)
    games = [str(c.get("game")) for c in config.get("curriculum") or [] if isinstance(c, dict)]
    tokens = sum(_num(m.get("tokens")) or 0 for m in metrics)
    trained = sum(_num(m.get("trained_tokens")) or 0 for m in metrics)
    elapsed = _num(last.get("elapsed"))
    lora = config.get("lora") or {}
    facts = [
        ("model", f"{(config.get('model') or {}).get('name', '?')}"
                  + (f" (LoRA r={lora.get('r')})" if lora.get("enabled") else " (full fine-tuning)" if lora else "")),
        ("games", ", ".join(games) or ", ".join(_role_keys(metrics)) or "–"),
        ("steps", f"{step} of {planned}" if planned else str(step)),
        ("wall time", _duration(elapsed)),
        ("episodes", f"{sum(int(_num(m.get('episodes')) or 0) for m in metrics):,}"
                     f" ({episodes_logged:,} transcripts logged)"),
        ("tokens", f"{tokens:,.0f} generated, {trained:,.0f} trained"
                   + (f" ({tokens / elapsed:,.0f} generated / s)" if elapsed else "")),
        ("advantage", _advantages(config)),
    ]
    return facts


def _advantages(config: dict) -> str:
    """The estimators the run used: per game and role where the curriculum says (the resolved
    config.toml always does), else the algorithm's default."""
    default = str((config.get("algorithm") or {}).get("advantage", "–"))
    parts = []
    for entry in config.get("curriculum") or []:
        choice = entry.get("advantage") if isinstance(entry, dict) else None
        if isinstance(choice, dict):
            parts.append(f"{entry.get('game')}: " + ", ".join(f"{r} {n}" for r, n in choice.items()))
        elif isinstance(choice, str):
            parts.append(f"{entry.get('game')}: {choice}")
    return "; ".join(parts) or default


def _final_roles_table(metrics: list[dict]) -> str:
    recent = metrics[-10:]
    rows = []
    for game, roles in _role_keys(metrics).items():
        for role in roles:
            key = f"{game}/{role}"
            cells = []
            for k in ("mean_return",) + OUTCOMES:
                vals = [_num((m.get("roles") or {}).get(key, {}).get(k)) for m in recent]
                vals = [v for v in vals if v is not None]
                cells.append(_fmt(sum(vals) / len(vals)) if vals else "–")
            rows.append(f"<tr><td>{html.escape(game)}</td><td>{html.escape(role)}</td>"
                        + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if not rows:
        return ""
    n = len(recent)
    return (f'<h3>Self-play, mean of the last {n} step{"s" * (n != 1)}</h3><table class="num"><thead><tr>'
            "<th>game</th><th>role</th><th>mean return</th><th>win</th><th>draw</th><th>loss</th>"
            f"<th>invalid</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _final_eval_table(metrics: list[dict]) -> str:
    evals = [m for m in metrics if m.get("eval")]
    if not evals:
        return ""
    rows = []
    for game, names in _eval_keys(evals).items():
        for name in names:
            found = next(((m["step"], m["eval"][game][name]) for m in reversed(evals)
                          if isinstance(m["eval"].get(game), dict) and name in m["eval"][game]), None)
            if found is None:
                continue
            step, value = found
            if name == "exploitability":
                label, cells = "best response", (f'<td colspan="5">exploitability '
                                                 f'<b>{_fmt(_exploitability(value), 4)}</b></td>')
            elif isinstance(value, dict):
                label, cells = name, "".join(f"<td>{_fmt(_num(value.get(k)))}</td>"
                                                     for k in ("mean_return",) + OUTCOMES)
            else:
                continue
            rows.append(f"<tr><td>{html.escape(game)}</td><td>{html.escape(label)}</td>"
                        f"<td>{html.escape(str(step))}</td>{cells}</tr>")
    if not rows:
        return ""
    return ("<h3>Evaluation, latest</h3><table class=\"num\"><thead><tr><th>game</th><th>against</th><th>step</th>"
            "<th>mean return</th><th>win</th><th>draw</th><th>loss</th><th>invalid</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _training_charts(metrics: list[dict]) -> str:
    charts = [chart(title, [(title, PALETTE[0], _series(metrics, lambda m, k=key: m[k]))])
              for key, title in STEP_CURVES]
    charts.append(chart("samples per step", [
        ("trained", PALETTE[0], _series(metrics, lambda m: m["samples"])),
        ("left over", PALETTE[4], _series(metrics, lambda m: m["leftover"])),
        ("quarantined episodes", PALETTE[1], _series(metrics, lambda m: m["quarantined"]))]))
    return "".join(charts)


def _game_charts(metrics: list[dict], game: str, roles: list[str]) -> str:
    colors = {role: PALETTE[i % len(PALETTE)] for i, role in enumerate(roles)}
    out = []
    for role in roles:
        key = f"{game}/{role}"
        out.append(chart(f"{role}: outcomes (self-play)", [
            (k, OUTCOME_COLORS[k], _series(metrics, lambda m, k=k: m["roles"][key][k])) for k in OUTCOMES],
            y_range=(0.0, 1.0)))
    for metric, title, y_range in ROLE_CURVES:
        lines = [(role, colors[role], _series(metrics, lambda m, r=role: m["roles"][f"{game}/{r}"][metric]))
                 for role in roles]
        out.append(chart(title, lines, y_range=y_range, refs=[(0.0, "0")] if metric == "mean_return" else ()))
    return "".join(out)


def _eval_charts(metrics: list[dict], game: str, names: list[str]) -> str:
    evals = [m for m in metrics if isinstance((m.get("eval") or {}).get(game), dict)]
    out = []
    def latest(name):
        return next((m["eval"][game][name] for m in reversed(evals) if name in m["eval"][game]), None)

    # a game's own evaluations (a held-out task set, ...): one chart of their numbers each
    custom = [n for n in names if n not in ("exploitability", "error") and isinstance(latest(n), dict)
              and "win" not in latest(n)]
    for name in custom:
        fields = [k for k, v in latest(name).items() if isinstance(v, float)]
        out.append(chart(name.replace("_", " "), [
            (k, PALETTE[i % len(PALETTE)], _series(evals, lambda m, k=k: m["eval"][game][name][k]))
            for i, k in enumerate(fields)]))
    opponents = [n for n in names if n not in ("exploitability", "error") and n not in custom]
    for name in opponents:
        out.append(chart(f"vs {name}", [
            (k, OUTCOME_COLORS[k], _series(evals, lambda m, k=k: m["eval"][game][name][k])) for k in OUTCOMES],
            y_range=(0.0, 1.0)))
    if opponents:
        out.append(chart("mean return vs scripted opponents", [
            (name, PALETTE[i % len(PALETTE)], _series(evals, lambda m, n=name: m["eval"][game][n]["mean_return"]))
            for i, name in enumerate(opponents)], refs=[(0.0, "0")]))
    if "exploitability" in names:
        latest = next((m["eval"][game]["exploitability"] for m in reversed(evals)
                       if isinstance(m["eval"][game].get("exploitability"), dict)), {})
        refs = [(0.0, "Nash 0")]
        for key, label in (("uniform", "uniform"), ("uniform_exploitability", "uniform")):
            if _num(latest.get(key)) is not None:
                refs.append((float(latest[key]), f"{label} {_fmt(float(latest[key]))}"))
                break
        out.append(chart("exploitability", [
            ("policy", PALETTE[0], _series(evals, lambda m: _exploitability(m["eval"][game]["exploitability"])))],
            refs=refs))
    return "".join(out)


# --- the page ---------------------------------------------------------------------------------------

ASSETS = "rolekit.report_assets"  # package data: page.html (the frame), browser.html, report.css, report.js


@functools.cache
def asset(name: str) -> str:
    """One of the page's fixed parts, read from the package data in ``rolekit/report_assets/``
    (``page.html`` has ``str.format`` fields: title, name, status, built, nav, sections, data,
    css, js)."""
    return importlib.resources.files(ASSETS).joinpath(name).read_text(encoding="utf-8")



def render(run_dir: Path, config: dict, config_text: str, metrics: list[dict], episodes: list[dict],
           episodes_logged: int) -> str:
    """The report as one HTML string (everything inline)."""
    name = run_dir.resolve().name
    nav = ['<a href="#summary">Summary</a>', '<a href="#training">Training</a>']
    sections = []

    facts = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                    for k, v in summary_facts(config, metrics, episodes_logged))
    status = "no step logged yet" if not metrics else f"step {metrics[-1].get('step')}"
    sections.append(f'<section id="summary"><h2>Summary</h2><div class="cols"><table class="facts">{facts}'
                    f'</table><div>{_final_roles_table(metrics)}{_final_eval_table(metrics)}</div></div></section>')

    sections.append(f'<section id="training"><h2>Training</h2><div class="grid">{_training_charts(metrics)}'
                    "</div></section>")
    for game, roles in _role_keys(metrics).items():
        anchor = f"game-{_slug(game)}"
        nav.append(f'<a href="#{anchor}">{html.escape(game)}</a>')
        sections.append(f'<section id="{anchor}"><h2>{html.escape(game)} <small>'
                        f'{html.escape(", ".join(roles))}</small></h2>'
                        f'<div class="grid">{_game_charts(metrics, game, roles)}</div></section>')
    evals = _eval_keys(metrics)
    if evals:
        nav.append('<a href="#evaluation">Evaluation</a>')
        body = "".join(f'<h3>{html.escape(game)}</h3><div class="grid">{_eval_charts(metrics, game, names)}</div>'
                       for game, names in evals.items())
        sections.append(f'<section id="evaluation"><h2>Evaluation</h2>{body}</section>')
    nav.append('<a href="#episodes">Episodes</a>')
    note = (f"{len(episodes)} of {episodes_logged} logged transcripts, sampled over the run"
            if len(episodes) < episodes_logged else f"all {episodes_logged} logged transcripts")
    sections.append(f'<section id="episodes"><h2>Episodes <small>{note}</small></h2>{asset("browser.html")}</section>')
    nav.append('<a href="#config">Config</a>')
    sections.append(f'<section id="config"><h2>Config</h2><pre class="config">'
                    f'{html.escape(config_text or "(no config.toml)")}</pre></section>')

    data = json.dumps({"episodes": episodes}, ensure_ascii=False, separators=(",", ":"), default=str)
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    data = data.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return asset("page.html").format(
        title=html.escape(f"rolekit report: {name}"), name=html.escape(name), status=html.escape(status),
        built=time.strftime("%Y-%m-%d %H:%M:%S"), nav="".join(nav), sections="".join(sections), data=data,
        css=asset("report.css"), js=asset("report.js"))


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "-" for c in s)


def build(run_dir: str | Path, *, out: str | Path | None = None, max_episodes: int = MAX_EPISODES) -> Path:
    """Write the report of ``run_dir`` (to ``run_dir/report.html`` unless ``out``); return its path.

    Safe on a run that is still going: half-written lines are skipped and the file is
    replaced atomically, so a browser never sees half a report."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    if not (run_dir / "metrics.jsonl").exists() and not (run_dir / "config.toml").exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no metrics.jsonl or config.toml)")
    config, config_text = read_config(run_dir)
    metrics = sorted(read_jsonl(run_dir / "metrics.jsonl"), key=lambda m: _num(m.get("step")) or 0)
    episodes, logged = sample_episodes(run_dir / "episodes.jsonl", limit=max_episodes)
    page = render(run_dir, config, config_text, metrics, episodes, logged)
    path = Path(out) if out is not None else run_dir / REPORT
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def refresh(run_dir: str | Path) -> Path | None:
    """``build``, for the training loop: a failure is a warning on stderr, never an exception."""
    try:
        return build(run_dir)
    except Exception as exc:  # noqa: BLE001 - a report must never stop training
        print(f"rolekit: warning: could not write the report: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


# --- TensorBoard -------------------------------------------------------------------------------------


def scalars(metrics: dict) -> dict[str, float]:
    """A step's metrics as flat TensorBoard tags: ``train/loss``, ``GAME/ROLE/mean_return``,
    ``eval/GAME/OPPONENT/win``, ``eval/GAME/exploitability``. Non-numbers are left out."""
    out: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                last = prefix.rsplit("/", 1)[-1]
                walk(prefix if k == last else f"{prefix}/{k}", v)
        elif (x := _num(value)) is not None:
            out[prefix] = x

    for key, value in metrics.items():
        if key in ("step", "roles", "eval"):
            continue
        if (x := _num(value)) is not None:
            out[f"train/{key}"] = x
    for key, row in (metrics.get("roles") or {}).items():
        walk(key, row)
    for game, result in (metrics.get("eval") or {}).items():
        walk(f"eval/{game}", result)
    return out


class TensorBoard:
    """Each step's scalar metrics as TensorBoard event files under ``RUN_DIR/tensorboard``
    (``tensorboard --logdir RUN_DIR/tensorboard``). Needs the ``tensorboard`` extra."""

    def __init__(self, run_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError("--tensorboard needs the tensorboard package: pip install 'rolekit[tensorboard]'") \
                from None
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def log(self, metrics: dict) -> None:
        step = int(metrics.get("step", 0))
        for tag, value in scalars(metrics).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # steps are seconds apart: a live TensorBoard sees each one

    def close(self) -> None:
        self.writer.close()


# --- rolekit report -----------------------------------------------------------------------------------


def cmd_report(args) -> int:
    path = build(args.run_dir, out=args.out, max_episodes=args.episodes)
    print(f"rolekit: wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if args.open:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="write RUN_DIR/report.html: curves, episode replays, config")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by rolekit train")
    p.add_argument("--open", action="store_true", help="open the report in a web browser")
    p.add_argument("--out", help="write the report here instead of RUN_DIR/report.html")
    p.add_argument("--episodes", type=int, default=MAX_EPISODES, help="most transcripts to keep (sampled)")
    p.set_defaults(func=cmd_report)
