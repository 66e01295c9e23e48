"""rolekit export: a trained run as a plain Hugging Face model directory (merged LoRA, or the
adapter), with tokenizer, chat template, generation config and a model card.

The key check runs the export in a subprocess that never imports rolekit: plain
``AutoModelForCausalLM`` must generate the same greedy tokens as rolekit's policy loaded
from the checkpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import rolekit_games
from rolekit.backends.hf import HFBackend
from rolekit.cli import main
from rolekit.config import from_dict
from rolekit.engine import Trainer
from rolekit.export import eval_figures, export
from rolekit.models import load_model
from rolekit.plugins import Kernel
from rolekit.types import GenerationRequest

MESSAGES = [{"role": "user", "content": "You hold the King. Check or bet? Answer in brackets."}]
NEW_TOKENS = 12


def _train(out: Path, *, lora: bool = True, steps: int = 2) -> Path:
    config = from_dict({
        "seed": 0, "model": {"name": "tiny-random"}, "lora": {"enabled": lora},
        "rollout": {"samples_per_step": 8, "concurrency": 8, "max_new_tokens": 8},
        "algorithm": {"steps": steps, "lr": 1e-2 if lora else 1e-3},
        "eval": {"every": 1, "at_start": True, "episodes": 4, "opponents": ["random"]},
        "checkpoint": {"every": 1, "keep": 5},
        "curriculum": [{"game": "kuhn_poker", "options": {"choose": True}}],
    })
    Trainer(config, out, kernel=Kernel([rolekit_games], load_entrypoints=False), quiet=True).run()
    return out


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("lora") / "run")


def _rolekit_greedy(checkpoint: Path) -> tuple[list[int], list[int]]:
    """The prompt ids (the chat template) and rolekit's policy's greedy answer from a checkpoint."""
    loaded = load_model(str(checkpoint))
    prompt = loaded.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"]
    [gen] = HFBackend(loaded.model, loaded.tokenizer).generate(
        [GenerationRequest(prompt, max_new_tokens=NEW_TOKENS, temperature=0.0)])
    return list(prompt), list(gen.completion_ids)


PLAIN = textwrap.dedent("""
    import json, sys
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path, messages, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=n)  # the export's generation_config: greedy, stops at end of turn
    print(json.dumps({"prompt": ids["input_ids"][0].tolist(), "answer": out[0, ids["input_ids"].shape[1]:].tolist(),
                      "rolekit_imported": any(m.split(".")[0] == "rolekit" for m in sys.modules),
                      "dtype": str(model.dtype), "class": type(model).__name__}))
""")


def _plain_greedy(path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", PLAIN, str(path), json.dumps(MESSAGES), str(NEW_TOKENS)],
                          capture_output=True, text=True, timeout=300, cwd=path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_merged_export_loads_without_rolekit_and_generates_the_policys_greedy_tokens(lora_run, tmp_path):
    out = tmp_path / "merged"
    assert main(["export", str(lora_run), "--out", str(out), "--merge"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "README.md"} <= names
    assert not names & {"adapter_config.json", "adapter_model.safetensors", "trainer_state.pt", "rolekit.json"}
    assert (out / "chat_template.jinja").exists() or "chat_template" in (out / "tokenizer_config.json").read_text()

    plain = _plain_greedy(out)
    prompt, answer = _rolekit_greedy(lora_run / "checkpoints" / "step-2")
    assert not plain["rolekit_imported"]
    assert plain["prompt"] == prompt  # the chat template came along
    assert plain["answer"] == answer
    assert len(answer) > 1

    # the merge carried the training: the weights are not tiny-random's
    from safetensors.torch import load_file

    merged = load_file(out / "model.safetensors")
    base = load_model("tiny-random").model.state_dict()
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged[key], base[key])


def test_adapter_export_is_the_checkpoints_adapter_with_a_card(lora_run, tmp_path):
    out = tmp_path / "adapter"
    path = export(lora_run / "checkpoints" / "step-1", out)
    assert path == out
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "generation_config.json", "README.md"} <= names
    assert "trainer_state.pt" not in names
    src = lora_run / "checkpoints" / "step-1" / "adapter_model.safetensors"
    assert (out / "adapter_model.safetensors").read_bytes() == src.read_bytes()
    assert _rolekit_greedy(out) == _rolekit_greedy(lora_run / "checkpoints" / "step-1")
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and "after 1 training steps of 2" in card


def test_model_card_states_base_games_steps_evaluations_and_config(lora_run, tmp_path):
    out = export(lora_run, tmp_path / "m", merge=True)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nbase_model: \"tiny-random\"\n")
    assert "`kuhn_poker` (player_0, player_1)" in card
    assert "`step-2`, after 2 training steps of 2" in card
    metrics = [json.loads(line) for line in (lora_run / "metrics.jsonl").read_text().splitlines()]
    final, best = eval_figures(metrics)
    step, value = final["kuhn_poker/exploitability"]
    assert step == 2
    best_step, best_value = best["kuhn_poker/exploitability"]
    assert best_value == min(m["eval"]["kuhn_poker"]["exploitability"]["exploitability"] for m in metrics if "eval" in m)
    assert f"| kuhn_poker/exploitability | {value:.4g} (2) | {best_value:.4g} ({best_step}) |" in card
    assert "kuhn_poker/random/win" in card and "infosets" not in card and "random/episodes" not in card
    assert "```toml\nseed = 0\n" in card and 'name = "tiny-random"' in card


def test_best_checkpoint_is_exported_when_the_run_kept_one(lora_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    shutil.rmtree(run / "checkpoints" / "best", ignore_errors=True)  # where the engine keeps one
    with pytest.raises(FileNotFoundError, match="kept no best checkpoint"):
        export(run, tmp_path / "none", best=True)
    shutil.copytree(run / "checkpoints" / "step-1", run / "checkpoints" / "best")
    info = json.loads((run / "checkpoints" / "best" / "rolekit.json").read_text())
    info["best"] = {"metric": "kuhn_poker/exploitability", "value": 0.25, "step": 1}
    (run / "checkpoints" / "best" / "rolekit.json").write_text(json.dumps(info))
    out = export(run, tmp_path / "best", best=True)
    card = (out / "README.md").read_text()
    assert "`best`, after 1 training steps" in card
    assert "step 1, kuhn_poker/exploitability = 0.25" in card


def test_full_finetuning_checkpoint_exports(tmp_path):
    run = _train(tmp_path / "full", lora=False, steps=1)
    for merge in (True, False):
        out = export(run, tmp_path / f"out-{merge}", merge=merge)
        assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
        assert "a fully fine-tuned model" in (out / "README.md").read_text()
    plain = _plain_greedy(tmp_path / "out-True")
    assert plain["answer"] == _rolekit_greedy(run / "checkpoints" / "step-1")[1]


def test_bad_sources_are_one_line_errors(lora_run, tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such run or checkpoint directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    assert main(["export", str(lora_run), "--out", str(tmp_path / "taken")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
