"""The run report (``rolekit report``), built from a real run and looked at in headless Chromium.

The browser tests drive Debian's ``chromium`` through ``chromedriver`` (selenium) with no
network; ``.ci/run`` installs both. Screenshots and timings land in ``test-artifacts/``.
"""

import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rolekit import report
from rolekit.cli import build_parser, main
from rolekit.config import from_dict
from rolekit.engine import Trainer
from rolekit.plugins import Kernel

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
INJECTION = '</script><img src=x onerror="window.pwned=1"><b id="pwned">bold?</b>'


# --- runs to report on ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """A 3-step run of the tiny model on TicTacToe (vs a scripted seat) and Kuhn Poker,
    trained by the engine with --tensorboard; the final checkpoint writes the report."""
    rolekit_games = pytest.importorskip("rolekit_games", reason="needs the rolekit-games plugin (make setup)")
    config = from_dict({
        "model": {"name": "tiny-random"},
        "rollout": {"samples_per_step": 8},
        "algorithm": {"steps": 3},
        "eval": {"every": 0},
        "checkpoint": {"every": 0},
        "logging": {"episodes_per_step": 8},
        "curriculum": [{"game": "tictactoe", "seats": {"player_0": "scripted:random"}}, {"game": "kuhn_poker"}],
    })
    out = tmp_path_factory.mktemp("real") / "run"
    kernel = Kernel(plugins=[rolekit_games], load_entrypoints=False)
    Trainer(config, out, kernel=kernel, quiet=True, tensorboard=True).run()
    return out


def fake_episode(rng: random.Random, step: int, game: str, text: str | None = None) -> dict:
    """An episodes.jsonl record shaped like the engine's (prompt sizes of the real games)."""
    rules = f"You are player_N in {game}. " + "These are the rules of the game, at about real length. " * 14
    turns = []
    n = {"tictactoe": rng.randint(1, 9), "kuhn_poker": rng.randint(1, 3), "negotiation": rng.randint(1, 10)}[game]
    for k in range(n):
        role = f"player_{k % 2}"
        board = " 0 | X | 2\n---+---+---\n 3 | O | 5\n---+---+---\n 6 | 7 | 8"
        view = {"tictactoe": f"Current board (you are X; empty cells show their number):\n{board}",
                "kuhn_poker": "Round 1 of 1. Your card: K. You act first this round.\nNo moves yet. Pot: 2 chips.",
                "negotiation": "Your inventory (units, and the value of one unit to you):\n  Wood: 3 (value 5 each)"}
        turns.append({"id": k, "role": role, "responder": "policy",
                      "prompt": rules.replace("player_N", role) + "\n\n" + view[game] + "\n\nLegal actions: [a], [b]",
                      "text": text or f"I think the best move here is [{rng.randint(0, 8)}]", "action": str(k),
                      "reward": None, "advantage": rng.uniform(-1, 1), "tokens": 16})
    winner = rng.choice(["player_0", "player_1", None])
    invalid = "player_1" if rng.random() < 0.2 else None
    info = {"winner": winner, **({"invalid": invalid} if invalid else {})}
    if game == "tictactoe":
        info["board"] = " X | X | X\n---+---+---\n 3 | O | O\n---+---+---\n 6 | 7 | 8"
    if game == "kuhn_poker":
        info.update(cards=["KQ"], chips={"player_0": 1, "player_1": -1}, rounds=["player_0 bet, player_1 folds"])
    returns = {"player_0": 1.0, "player_1": -1.0} if winner == "player_0" else {"player_0": -1.0, "player_1": 1.0}
    return {"step": step, "game": game, "seed": rng.randrange(10**6), "seats": {"player_0": "policy",
            "player_1": "policy"}, "returns": returns, "info": info, "error": None, "turns": turns}


def fake_metrics(rng: random.Random, step: int, games=("tictactoe", "kuhn_poker", "negotiation"),
                 eval_every: int = 10) -> dict:
    roles = {}
    for game in games:
        for role in ("player_0", "player_1"):
            w = min(0.9, step / 600 + rng.uniform(0, 0.1))
            roles[f"{game}/{role}"] = {
                "episodes": 8, "mean_return": 2 * w - 1, "win": w, "draw": 0.05, "loss": 0.95 - w,
                "invalid": max(0.0, 0.5 - step / 800), "policy_episodes": 8, "samples": 16,
                "adv_mean": rng.gauss(0, 0.1), "adv_std": 0.5, "response_length": 12 + rng.random(),
                "pg_loss": rng.gauss(0, 0.1), "clip_fraction": rng.random() * 0.1, "kl": step / 1e4,
                "entropy": 3 - step / 500, "approx_kl_old": 1e-4, "baseline": 2 * w - 1.2}
    m = {"step": step, "episodes": 48, "quarantined": 0, "samples": 64, "leftover": 3, "tokens": 900,
         "trained_tokens": 1000, "seconds": 10.0, "elapsed": 10.0 * step, "episodes_per_s": 4.8,
         "tokens_per_s": 90.0, "loss": rng.gauss(0, 0.2), "grad_norm": 1 + rng.random(), "padding_fraction": 0.1,
         "skipped_update": False, "roles": roles}
    if eval_every and step % eval_every == 0:
        m["eval"] = {game: {"random": {"win": 0.5 + step / 1200, "draw": 0.1, "loss": 0.4 - step / 1200,
                                       "invalid": 0.1, "mean_return": step / 600, "by_seat": {}}}
                     for game in games}
        m["eval"]["kuhn_poker"]["exploitability"] = {"exploitability": 0.46 - step / 2000, "uniform": 0.4583}
    return m


def fake_run(path: Path, steps: int, per_step: int = 4, seed: int = 0, text: str | None = None) -> Path:
    """A run directory as the engine writes it, without training: config, metrics, transcripts."""
    rng = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    path.joinpath("config.toml").write_text(
        f'seed = 0\n\n[model]\nname = "tiny-random"\n\n[algorithm]\nsteps = {steps}\nadvantage = "rae"\n\n'
        '[[curriculum]]\ngame = "tictactoe"\n\n[[curriculum]]\ngame = "kuhn_poker"\n\n'
        '[[curriculum]]\ngame = "negotiation"\n')
    games = ("tictactoe", "kuhn_poker", "negotiation")
    with open(path / "metrics.jsonl", "w") as m, open(path / "episodes.jsonl", "w") as e:
        for step in range(1, steps + 1):
            m.write(json.dumps(fake_metrics(rng, step)) + "\n")
            for _ in range(per_step):
                e.write(json.dumps(fake_episode(rng, step, rng.choice(games), text)) + "\n")
    return path


# --- building the report -------------------------------------------------------------------------


def test_training_refreshes_the_report_and_writes_tensorboard_scalars(real_run):
    page = (real_run / "report.html").read_text()
    assert "tiny-random" in page and "3 of 3" in page
    for section in ('id="summary"', 'id="training"', 'id="game-tictactoe"', 'id="game-kuhn_poker"',
                    'id="episodes"', 'id="config"', "mean return", "RAE baseline", "clip fraction"):
        assert section in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch at view time

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(real_run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/tokens_per_s", "kuhn_poker/player_0/mean_return"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]


def test_scalars_flatten_roles_and_evaluation():
    m = fake_metrics(random.Random(0), 10)
    tags = report.scalars(m)
    assert tags["train/loss"] == m["loss"] and "train/skipped_update" not in tags and "train/step" not in tags
    assert tags["tictactoe/player_1/win"] == m["roles"]["tictactoe/player_1"]["win"]
    assert tags["eval/kuhn_poker/exploitability"] == pytest.approx(0.455)
    assert tags["eval/kuhn_poker/random/win"] == pytest.approx(0.5 + 10 / 1200)


def test_model_output_cannot_inject_html(tmp_path):
    run = fake_run(tmp_path / "run", steps=3, text=INJECTION)
    page = report.build(run).read_text()
    script = page.split('id="rk-episodes">', 1)[1].split("</script>", 1)[0]
    assert "<" not in script and ">" not in script  # the JSON cannot close its tag
    assert json.loads(script)["episodes"][0]["turns"][0]["text"] == INJECTION
    assert "<img" not in page


def test_a_run_in_progress_or_with_missing_keys_still_reports(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "roles": {"g/r": {"mean_return": 0.5}}}) + "\n"
                                       + json.dumps({"step": 2, "eval": {"g": {"exploitability": 0.3}}}) + "\n"
                                       + '{"step": 3, "ro')  # the last line is still being written
    page = report.build(run).read_text()
    assert "no config.toml" in page and "mean return" in page and "exploitability" in page
    assert "step 2" in page  # the half line is skipped


def test_transcripts_are_sampled_over_the_run(tmp_path):
    run = fake_run(tmp_path / "run", steps=200, per_step=4)
    episodes, logged = report.sample_episodes(run / "episodes.jsonl", limit=60)
    assert logged == 800 and len(episodes) <= 60
    steps = sorted({e["step"] for e in episodes})
    assert steps[0] == 1 and steps[-1] >= 195 and len(steps) > 10  # spread over the run
    assert {"tictactoe", "kuhn_poker", "negotiation"} <= {e["game"] for e in episodes}
    assert any("invalid" in e["tags"] for e in episodes) and any("policy_win" in e["tags"] for e in episodes)
    whole, n = report.sample_episodes(run / "episodes.jsonl", limit=1000)
    assert n == len(whole) == 800


def test_a_500_step_report_stays_under_10_mb(tmp_path):
    run = fake_run(tmp_path / "run", steps=500, per_step=8)
    assert (run / "episodes.jsonl").stat().st_size > 10_000_000  # too big to embed whole
    path = report.build(run)
    size = path.stat().st_size
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "report-500-size.txt").write_text(f"{size} bytes\n")
    assert size < 10_000_000


def test_a_failing_report_never_stops_training(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(report, "build", broken)
    config = from_dict({"model": {"name": "tiny-random"}, "rollout": {"samples_per_step": 4, "max_new_tokens": 2},
                        "algorithm": {"steps": 1}, "eval": {"every": 0}, "curriculum": [{"game": "echo"}]})
    history = Trainer(config, tmp_path / "run", kernel=Kernel(load_entrypoints=False), quiet=True).run()
    assert len(history) == 1 and (tmp_path / "run" / "checkpoints" / "step-1").is_dir()
    assert "warning: could not write the report: OSError: disk full" in capsys.readouterr().err


def test_tensorboard_without_the_extra_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ValueError, match=r"pip install 'rolekit\[tensorboard\]'"):
        report.TensorBoard(tmp_path)


def test_ticks_are_round_and_cover_the_range():
    assert report.ticks(0, 1) == [0, 0.25, 0.5, 0.75, 1.0]
    assert report.ticks(-1.6, 0.6) == [-1.5, -1.0, -0.5, 0.0, 0.5]
    assert report.ticks(2, 2) == [2]


def test_refresh_warns_instead_of_raising(tmp_path, capsys):
    assert report.refresh(tmp_path / "missing") is None
    assert "warning: could not write the report" in capsys.readouterr().err


def test_cli_report(tmp_path, capsys):
    run = fake_run(tmp_path / "run", steps=2)
    assert main(["report", str(run)]) == 0
    assert "report.html" in capsys.readouterr().out and (run / "report.html").exists()
    assert main(["report", str(run), "--out", str(tmp_path / "r.html"), "--episodes", "3"]) == 0
    assert "3 of 8 logged transcripts" in (tmp_path / "r.html").read_text()
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    assert build_parser().parse_args(["train", "x.toml", "--tensorboard"]).tensorboard is True


# --- in a real browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium without network (a dead proxy; the page's CSP allows nothing either)."""
    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    profile = tempfile.mkdtemp(prefix="rolekit-chromium-")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--proxy-server=http://127.0.0.1:9", f"--user-data-dir={profile}",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_browser_clicks_through_to_an_episode(real_run, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get((real_run / "report.html").as_uri())
    assert browser.execute_script("return typeof window.rolekitReady") == "number"
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "report-overview.png"))

    logged = [json.loads(line) for line in (real_run / "episodes.jsonl").read_text().splitlines()]
    Select(browser.find_element(By.ID, "f-game")).select_by_value("tictactoe")
    items = browser.find_elements(By.CSS_SELECTOR, "#ep-list button")
    assert items and all("tictactoe" in b.text for b in items)
    # an episode where the scripted seat moved first: its board shows a mark
    pick = next(i for i, b in enumerate(items)
                if len(logged[int(b.get_attribute("data-index"))]["turns"]) > 1)
    target = items[pick]
    episode = logged[int(target.get_attribute("data-index"))]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", target)
    target.click()

    view = browser.find_element(By.ID, "ep-view")
    text = view.text
    assert f"tictactoe · step {episode['step']} · seed {episode['seed']}" in text
    turns = view.find_elements(By.CSS_SELECTOR, ".turn")
    assert len(turns) == len(episode["turns"])
    for shown, turn in zip(turns, episode["turns"]):
        assert turn["role"] in shown.text and turn["responder"] in shown.text
        saw = turn["prompt"] if isinstance(turn["prompt"], str) else \
            "".join(f"{m['role']}: {m['content']}\n" for m in turn["prompt"])  # chat messages
        assert shown.find_element(By.CSS_SELECTOR, "pre.prompt").get_attribute("textContent") == saw
        assert shown.find_element(By.CSS_SELECTOR, "pre.answer").get_attribute("textContent") == turn["text"]
        assert len(shown.find_elements(By.CSS_SELECTOR, ".ttt div")) == 9  # the board, drawn
    assert {"X", "O"} & {c.text for c in view.find_elements(By.CSS_SELECTOR, ".ttt div")}
    for turn in episode["turns"]:
        if turn["advantage"] is not None:
            assert f"advantage {turn['advantage']:+.3f}" in text

    browser.execute_script("document.getElementById('episodes').scrollIntoView()")
    browser.save_screenshot(str(ARTIFACTS / "report-episode.png"))

    # seat by seat: only the chosen seat's turns stay visible
    seat = episode["turns"][0]["role"]
    next(b for b in view.find_elements(By.CSS_SELECTOR, ".seats button") if b.text == seat).click()
    visible = [t for t in view.find_elements(By.CSS_SELECTOR, ".turn") if t.is_displayed()]
    assert visible and all(seat in t.find_element(By.CSS_SELECTOR, ".head").text for t in visible)

    # filters: invalid moves only
    Select(browser.find_element(By.ID, "f-game")).select_by_value("")
    Select(browser.find_element(By.ID, "f-tag")).select_by_value("invalid")
    shown = browser.find_elements(By.CSS_SELECTOR, "#ep-list button")
    assert shown and all("moved illegally" in b.text for b in shown)
    assert browser.find_element(By.CSS_SELECTOR, "#ep-view h3").text.startswith("tictactoe")  # still shown


def test_browser_shows_model_output_as_text(tmp_path, browser):
    from selenium.webdriver.common.by import By

    run = fake_run(tmp_path / "run", steps=2, text=INJECTION)
    browser.get(report.build(run).as_uri() + "#episode-0")  # a link straight to an episode
    answer = browser.find_element(By.CSS_SELECTOR, "#ep-view pre.answer")
    assert answer.get_attribute("textContent") == INJECTION
    assert browser.execute_script("return [window.pwned, document.getElementById('pwned'), "
                                  "document.querySelectorAll('img').length]") == [None, None, 0]


def test_a_500_step_report_opens_in_under_2_seconds(tmp_path, browser):
    path = report.build(fake_run(tmp_path / "run", steps=500, per_step=8))
    times = []
    for _ in range(3):
        browser.get("about:blank")
        start = time.perf_counter()
        browser.get(path.as_uri())
        wall = time.perf_counter() - start
        ready, load = browser.execute_script(
            "var t = performance.timing; return [window.rolekitReady, t.loadEventEnd - t.navigationStart]")
        times.append({"wall_s": round(wall, 3), "script_ready_ms": round(ready), "load_event_ms": load})
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "report-500-timing.json").write_text(json.dumps(
        {"bytes": path.stat().st_size, "runs": times}, indent=2) + "\n")
    best = min(times, key=lambda t: t["wall_s"])
    assert best["wall_s"] < 2.0 and best["script_ready_ms"] < 2000, times


def test_a_games_own_evaluation_and_per_role_estimators_are_shown(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text('[algorithm]\nadvantage = "rae"\n\n[[curriculum]]\ngame = "arithmetic"\n'
                                     'advantage = {proposer = "role_norm", solver = "grpo"}\n')
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "roles": {"arithmetic/solver": {"reward_per_turn": 0.1 * s}},
                    "eval": {"arithmetic": {"held_out": {"accuracy": 0.05 * s, "tasks": 64}}}}) + "\n"
        for s in (1, 2, 3)))
    page = report.build(run).read_text()
    assert "held out" in page and "accuracy" in page
    assert "arithmetic: proposer role_norm, solver grpo" in page
