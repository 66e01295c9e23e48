"""The embedded default model plays real episodes (slow: converts/loads SmolLM2-135M)."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_embedded_default_plays_a_few_episodes():
    out = subprocess.run([sys.executable, "-m", "rolekit.cli", "rollout", "--game", "nim", "--episodes", "4",
                          "--model", "smollm2-135m-instruct", "--max-new-tokens", "12", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["episodes"] == 4 and report["quarantined"] == 0
    assert report["generated_tokens"] > 0 and report["policy_turns"] >= 4
    assert set(report["roles"]) == {"player_0", "player_1"}
    # an instruct model answers in words, and at least sometimes names a legal move
    transcript = report["sample_transcript"]
    assert "player_0 (policy) was asked" in transcript and "Stones left" in transcript
