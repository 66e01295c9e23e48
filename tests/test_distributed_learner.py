"""The data-parallel learner: 2 real gloo processes launched by torchrun take the step one
process takes on the same batch, whole ("ddp") or with AdamW's state sharded ("zero"); the
sharded learner's checkpoint is one process's and resumes in either; ``rolekit train`` under
torchrun trains as a plain run does."""

import copy
import json
import os
import pickle
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import peft
import pytest
import torch

from rolekit.config import AlgorithmConfig
from rolekit.learner import Learner
from rolekit.models import TINY, load_model
from rolekit.types import Sample

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

# (name, learner options, LoRA?, distributed.learner): one micro-batch per sample (every
# sample's forward pass is then the same computation in one process and in two), and the
# default micro-batches.
SETUPS = [
    ("lora", dict(lr=1e-3, ppo_epochs=2, micro_batch_tokens=1), True, "ddp"),
    ("full", dict(lr=1e-3, micro_batch_tokens=1, entropy_coef=0.1), False, "ddp"),
    ("lora-buckets", dict(lr=1e-3), True, "ddp"),
    ("zero-lora", dict(lr=1e-3, ppo_epochs=2, micro_batch_tokens=1), True, "zero"),
    ("zero-full", dict(lr=1e-3, micro_batch_tokens=1, entropy_coef=0.1), False, "zero"),
]

WORKER = textwrap.dedent("""
    import copy, pickle, sys, torch
    import torch.distributed as dist
    from rolekit.distributed.learner import DataParallel, serve
    sys.path.insert(0, sys.argv[1])
    from test_distributed_learner import SETUPS, build, whole, gradients, state_numel

    import rolekit.distributed.zero
    rolekit.distributed.zero.BUCKET_ELEMENTS = 1 << 12  # many buckets (a rolekit train run below has one)

    data = pickle.load(open(sys.argv[2], "rb"))
    out = {}
    for name, options, lora, mode in [s for s in SETUPS if s[3] == sys.argv[4]]:
        dp = DataParallel.from_env(learner=mode)
        learner = build(options, lora, seed=1 + dp.rank, data_parallel=dp)  # a different init per rank
        state = None
        if dp.rank == 0:
            learner.step(data, 8)
            state = learner.state_dict()  # a checkpoint's optimizer state: rank 0 asks, rank 1 joins
            dp.stop()
        else:
            serve(learner)
        out[name] = {"weights": [p.detach().clone() for p in whole(learner)], "grads": gradients(learner),
                     "shard": len(dp.shard(data)), "state": state, "state_numel": state_numel(learner)}
        if mode == "zero":  # resume from that checkpoint: weights and AdamW state loaded, then a second step
            box = [(out[name]["weights"], state)]
            dist.broadcast_object_list(box, src=0)
            weights, state = box[0]
            again = build(options, lora, seed=7 + dp.rank, data_parallel=dp)
            with torch.no_grad():
                for p, w in zip(whole(again), weights):
                    p.copy_(w)
            again.load_state_dict(copy.deepcopy(state))  # AdamW keeps the loaded 'step' tensors and counts on
            if dp.rank == 0:
                again.step(data, 8)
                dp.stop()
            else:
                serve(again)
            out[name]["resumed"] = [p.detach().clone() for p in whole(again)]
    torch.save(out, f"{sys.argv[3]}/rank{dp.rank}.pt")
""")


def build(options, lora, seed, data_parallel=None):
    """A learner on tiny-random (LoRA r=4 with a random B, or full fine-tuning)."""
    model = load_model(TINY, finetune="lora" if lora else "full").model
    torch.manual_seed(seed)
    if lora:
        model = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                           target_modules=["q_proj", "v_proj", "up_proj"]))
    else:
        model.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    learner = Learner if data_parallel is None else data_parallel.learner_class
    return learner(model, params, AlgorithmConfig(**options), device="cpu", data_parallel=data_parallel)


def whole(learner):
    """The model's trained parameters (a sharded learner's own ``params`` are its slices)."""
    return getattr(learner.data_parallel, "whole", None) or learner.params


def gradients(learner):
    """The learner's last gradients, whole (a sharded learner's are gathered: every rank calls this)."""
    from torch.distributed.tensor import DTensor

    return [(p.grad.full_tensor().view_as(w) if isinstance(p.grad, DTensor) else p.grad.clone())
            for p, w in zip(learner.params, whole(learner))]


def state_numel(learner):
    """Elements of AdamW's moments this process holds."""
    from torch.distributed.tensor import DTensor

    return sum((v.to_local() if isinstance(v, DTensor) else v).numel()
               for entries in learner.optimizer.state.values() for k, v in entries.items() if k != "step")


def batch(n=11):
    """Free-text samples over 4 prompts and two constrained choices, advantages of both signs."""
    rng = random.Random(0)
    prompts = [tuple(rng.randrange(5, 500) for _ in range(k)) for k in (9, 14, 5, 20)]
    out = []
    for i in range(n):
        c = tuple(rng.randrange(5, 500) for _ in range(rng.choice([1, 3, 6])))
        out.append(Sample(game="g", role="ab"[i % 2], prompt_ids=prompts[i % 4], completion_ids=c,
                          logprobs=tuple(rng.uniform(-9, -5) for _ in c), advantage=rng.uniform(-1, 1),
                          temperature=0.9, max_new_tokens=8))
    answers = ((21, 22), (31,), (41, 42, 43))
    for k in range(2):
        out.append(Sample(game="g", role="b", prompt_ids=prompts[k], completion_ids=answers[k], logprobs=(-1.2,),
                          advantage=(-1) ** k, choice_ids=answers))
    return out


def launch(tmp, mode):
    """What each of 2 torchrun ranks holds after its learner steps, for every setup of ``mode`` (one launch)."""
    (tmp / "worker.py").write_text(WORKER)
    data = tmp / "batch.pkl"
    data.write_bytes(pickle.dumps(batch()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([*TORCHRUN, str(tmp / "worker.py"), str(Path(__file__).parent), str(data), str(tmp), mode],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return [torch.load(tmp / f"rank{r}.pt") for r in range(2)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return launch(tmp_path_factory.mktemp("ddp"), "ddp")


@pytest.fixture(scope="module")
def two_sharded_ranks(tmp_path_factory):
    return launch(tmp_path_factory.mktemp("zero"), "zero")


def assert_same_step(alone, weights, lr):
    """``weights`` took the step ``alone`` took. AdamW's first step moves a weight by
    lr * g / (|g| + 1e-8): the ~1e-9 rounding of a sum taken in another order moves a weight
    whose gradient is ~1e-10 by up to ~0.1 lr (and, with two PPO epochs, the second epoch's
    gradients a little); every weight with a well-determined gradient (|g| > 1e-5) takes the
    same step to 1 % of lr -- a lost or doubled shard moves most by ~lr."""
    diff = torch.cat([(w - p.detach()).abs().flatten() for p, w in zip(alone.params, weights)])
    grad = torch.cat([p.grad.abs().flatten() for p in alone.params])
    assert diff.max().item() < 0.1 * lr
    assert diff[grad > 1e-5].max().item() < 0.01 * lr


@pytest.mark.parametrize("setup", [pytest.param(s, marks=[pytest.mark.slow] if s[3] == "zero" else [])
                                   for s in SETUPS], ids=[s[0] for s in SETUPS])
def test_two_gloo_ranks_take_the_step_one_process_takes(request, setup):
    name, options, lora, mode = setup
    ranks = request.getfixturevalue("two_sharded_ranks" if mode == "zero" else "two_ranks")
    alone = build(options, lora, seed=1)
    initial = [p.detach().clone() for p in alone.params]
    alone.step(batch(), 8)
    rank0, rank1 = ranks[0][name], ranks[1][name]
    assert rank0["shard"] > 0 and rank1["shard"] > 0 and rank0["shard"] + rank1["shard"] == len(batch())
    for a, b in zip(rank0["weights"], rank1["weights"]):  # one reduced gradient, one AdamW step: bitwise equal
        assert torch.equal(a, b)
    for p, g in zip(alone.params, rank0["grads"]):
        assert torch.allclose(g, p.grad, rtol=1e-4, atol=1e-8)  # the summed shards' gradient is the batch's
    assert_same_step(alone, rank0["weights"], options["lr"])
    moved = max((p.detach() - before).abs().max().item() for p, before in zip(alone.params, initial))
    assert moved > 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("setup", [s for s in SETUPS if s[3] == "zero"], ids=lambda s: s[0])
def test_zero_shards_adamw_and_checkpoints_as_one_process(two_sharded_ranks, setup):
    """Each rank holds half of AdamW's moments; rank 0's checkpoint state is one process's
    (same keys, shapes and values), loads into one process, and resumes on 2 sharded ranks:
    both take the second step one process takes from there."""
    name, options, lora, _ = setup
    data = batch()
    alone = build(options, lora, seed=1)
    alone.step(data, 8)
    expected = alone.state_dict()
    rank0, rank1 = two_sharded_ranks[0][name], two_sharded_ranks[1][name]
    total = state_numel(alone)
    assert rank0["state_numel"] + rank1["state_numel"] == total  # every moment element on one rank ...
    assert max(rank0["state_numel"], rank1["state_numel"]) <= total // 2 + 2 * len(alone.params)  # ... a half each
    state = rank0["state"]
    assert state["param_groups"] == expected["param_groups"]
    assert state["state"].keys() == expected["state"].keys()
    for i, entries in expected["state"].items():
        assert state["state"][i].keys() == entries.keys()
        assert torch.equal(state["state"][i]["step"], entries["step"])
        for key in ("exp_avg", "exp_avg_sq"):
            got, want = state["state"][i][key], entries[key]
            assert type(got) is torch.Tensor and got.shape == want.shape  # whole, not this rank's slice
            assert torch.allclose(got, want, rtol=1e-3, atol=1e-9), (i, key)

    def second_step(optimizer_state):
        """One process from the 2 ranks' weights after the first step and ``optimizer_state``, one more step."""
        learner = build(options, lora, seed=5)
        with torch.no_grad():
            for p, w in zip(learner.params, rank0["weights"]):
                p.copy_(w)
        learner.load_state_dict(copy.deepcopy(optimizer_state))
        learner.step(data, 8)
        return learner

    reference = second_step(expected)  # one process's own optimizer state ...
    assert_same_step(reference, [p.detach() for p in second_step(state).params], options["lr"])  # ... or theirs
    for a, b in zip(rank0["resumed"], rank1["resumed"]):  # and the 2 sharded ranks, resumed from their checkpoint
        assert torch.equal(a, b)
    assert_same_step(reference, rank0["resumed"], options["lr"])
    assert max((a - b).abs().max().item() for a, b in zip(rank0["resumed"], rank0["weights"])) > 1e-4


def test_an_unknown_learner_is_a_config_error_naming_it():
    from rolekit.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="distributed.*learner must be 'ddp', 'zero' or 'fsdp', got 'zero3'"):
        from_dict({"curriculum": [{"game": "nim"}], "distributed": {"learner": "zero3"}})


def test_one_shard_alone_is_not_the_batch():
    """The comparison above has teeth: rank 0's shard without the other's gradient steps elsewhere."""
    from rolekit.distributed.learner import DataParallel

    data = batch()
    full = build(SETUPS[0][1], True, seed=1)
    full.step(data, 8)
    half = build(SETUPS[0][1], True, seed=1)
    shard = DataParallel(0, 2).shard(data)
    assert 0 < len(shard) < len(data)
    half.step(shard, 8)
    assert max((a - b).abs().max().item() for a, b in zip(full.params, half.params)) > 1e-4


TRAIN = """
seed = 0
[model]
name = "tiny-random"
[lora]
r = 4
alpha = 8
[rollout]
samples_per_step = 12
max_new_tokens = 4
concurrency = 8
seeded_sampling = true
[algorithm]
steps = 2
lr = 5e-3
recompute_logprobs = true
micro_batch_tokens = 1
[eval]
every = 0
[checkpoint]
every = 1
[[curriculum]]
game = "echo"
options = { letters = "AB" }
[[curriculum]]
game = "nim"
"""


@pytest.mark.slow
def test_rolekit_train_under_torchrun_matches_a_plain_run(tmp_path):
    """The documented launch: rank 0 plays, both ranks learn, checkpoints and metrics written once."""
    config = tmp_path / "run.toml"
    config.write_text(TRAIN)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = ["-m", "rolekit.cli", "train", str(config), "--quiet", "--out"]
    plain = subprocess.run([sys.executable, *cli, str(tmp_path / "plain")], env=env, capture_output=True,
                           text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr[-3000:]
    ranks = subprocess.run([*TORCHRUN, *cli, str(tmp_path / "ddp")], env=env, capture_output=True, text=True,
                           timeout=300)
    assert ranks.returncode == 0, ranks.stderr[-3000:]

    def metrics(run):
        return [m for m in map(json.loads, (tmp_path / run / "metrics.jsonl").open())]

    plain_metrics, ddp_metrics = metrics("plain"), metrics("ddp")
    for a, b in zip(plain_metrics, ddp_metrics, strict=True):  # the same episodes, the same batch, ...
        for key in ("step", "episodes", "samples", "tokens", "trained_tokens"):
            assert a[key] == b[key], key
        assert {k: r.get("mean_return") for k, r in a["roles"].items()} == \
            {k: r.get("mean_return") for k, r in b["roles"].items()}
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)  # ... the loss summed over both ranks' shards
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == ["step-1", "step-2"]
    from safetensors.torch import load_file

    a = load_file(tmp_path / "plain" / "checkpoints" / "step-2" / "adapter_model.safetensors")
    b = load_file(tmp_path / "ddp" / "checkpoints" / "step-2" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-4), key


@pytest.mark.slow
def test_rolekit_train_zero_checkpoint_resumes_in_one_process(tmp_path):
    """Full fine-tuning with distributed.learner = "zero": 2 ranks write the checkpoint one
    process writes (weights and whole AdamW state), and one process resumes it: its second
    step lands where a plain 2-step run's does. (2 sharded ranks resuming: the test above.)"""
    assert_sharded_checkpoint_resumes_in_one_process(tmp_path, "zero")


def assert_sharded_checkpoint_resumes_in_one_process(tmp_path, learner: str) -> None:
    """``rolekit train`` full fine-tuning on 2 ranks with ``distributed.learner = learner``
    writes the step-1 checkpoint a plain run writes (weights and whole AdamW state), and one
    process resuming it lands its second step where the plain 2-step run's does."""
    from safetensors.torch import load_file

    from rolekit.checkpoint import load_state

    config = tmp_path / "run.toml"
    config.write_text(TRAIN.replace("[lora]\nr = 4\nalpha = 8", "[lora]\nenabled = false")
                      .replace("lr = 5e-3", "lr = 1e-4") + f'[distributed]\nlearner = "{learner}"\n')
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def train(*args, ranks=False):
        cli = ["-m", "rolekit.cli", "train", str(config), "--quiet", *args]
        run = subprocess.run([*TORCHRUN, *cli] if ranks else [sys.executable, *cli], env=env, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]

    def checkpoint(run, step):
        path = tmp_path / run / "checkpoints" / f"step-{step}"
        return load_file(path / "model.safetensors"), load_state(path)["optimizer"]

    train("--out", str(tmp_path / "plain"))  # one process (distributed.learner means nothing there)
    train("--out", str(tmp_path / learner), "--set", "algorithm.steps=1", ranks=True)
    train("--resume", str(tmp_path / learner))  # one process continues the 2 ranks' run

    plain_weights, plain_adam = checkpoint("plain", 1)
    weights, adam = checkpoint(learner, 1)
    assert weights.keys() == plain_weights.keys()
    for key in weights:
        assert torch.allclose(weights[key], plain_weights[key], atol=1e-5), key  # 0.1 lr: see assert_same_step
    assert adam["param_groups"] == plain_adam["param_groups"] and adam["state"].keys() == plain_adam["state"].keys()
    for i, entries in plain_adam["state"].items():
        for key, value in entries.items():
            assert type(adam["state"][i][key]) is torch.Tensor and adam["state"][i][key].shape == value.shape
            assert torch.allclose(adam["state"][i][key], value, rtol=1e-3, atol=1e-8), (i, key)
    final, _ = checkpoint("plain", 2)
    resumed, _ = checkpoint(learner, 2)
    moved = max((final[k] - plain_weights[k]).abs().max().item() for k in final)
    assert moved > 1e-5  # the second step moved the weights ...
    for key in final:  # ... and the resumed run moved them alike
        assert torch.allclose(resumed[key], final[key], atol=0.05 * moved), key
