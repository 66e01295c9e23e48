"""The fully sharded learner (``distributed.learner = "fsdp"``, torch's FSDP2): 2 real gloo
processes launched by torchrun take the step one process takes on the same batch, on LoRA
and full fine-tuning, each holding half of the model's weights; rank 0's checkpoint is one
process's and resumes in one process and on 2 sharded ranks."""

import copy
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from test_distributed_learner import (TORCHRUN, assert_same_step, assert_sharded_checkpoint_resumes_in_one_process,
                                      batch, build, state_numel)

# (name, learner options, LoRA?): one micro-batch per sample (rank 0 runs 7, rank 1 runs 6
# and a filler), two PPO epochs, an entropy bonus; larger micro-batches (rank 0 runs 4 and a
# filler, rank 1 runs 5)
SETUPS = [
    ("fsdp-lora", dict(lr=1e-3, ppo_epochs=2, micro_batch_tokens=1), True),
    ("fsdp-full", dict(lr=1e-3, micro_batch_tokens=1, entropy_coef=0.1), False),
    ("fsdp-lora-buckets", dict(lr=1e-3, micro_batch_tokens=40), True),
]

WORKER = textwrap.dedent("""
    import copy, pickle, sys, torch
    import torch.distributed as dist
    from rolekit.distributed.learner import DataParallel, serve
    sys.path.insert(0, sys.argv[1])
    from test_distributed_fsdp import SETUPS
    from test_distributed_learner import build, state_numel

    data = pickle.load(open(sys.argv[2], "rb"))
    out = {}
    dp = DataParallel.from_env(learner="fsdp")
    for name, options, lora in SETUPS:
        learner = build(options, lora, seed=1 + dp.rank, data_parallel=dp)  # a different init per rank
        state = metrics = None
        if dp.rank == 0:
            metrics = learner.step(data, 8)
            state = learner.state_dict()  # a checkpoint's optimizer state: rank 0 asks, rank 1 joins
            dp.stop()
        else:
            serve(learner)
        out[name] = {"rollout": [p.detach().clone() for p in learner.rollout], "metrics": metrics,
                     "gathered": [p.full_tensor() for p in learner.params], "state": state,
                     "shard_numel": learner.shard_numel(), "state_numel": state_numel(learner),
                     "buckets": len(learner.data_parallel.shard(data))}
        # resume from that checkpoint: rank 0's whole weights and AdamW state, then a second step
        box = [(out[name]["gathered"], state)]
        dist.broadcast_object_list(box, src=0)
        weights, state = box[0]
        again = build(options, lora, seed=7 + dp.rank, data_parallel=dp)
        with torch.no_grad():
            for p, w in zip(again.rollout, weights):  # rank 0 loads the checkpoint's weights ...
                p.copy_(w)
        again.load_state_dict(copy.deepcopy(state))  # ... and every rank takes its slices
        if dp.rank == 0:
            again.step(data, 8)
            dp.stop()
        else:
            serve(again)
        out[name]["resumed"] = [p.full_tensor() for p in again.params]
    torch.save(out, f"{sys.argv[3]}/rank{dp.rank}.pt")
""")


@pytest.fixture(scope="module")
def two_fsdp_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    (tmp / "worker.py").write_text(WORKER)
    data = tmp / "batch.pkl"
    data.write_bytes(pickle.dumps(batch()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([*TORCHRUN, str(tmp / "worker.py"), str(Path(__file__).parent), str(data), str(tmp)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return [torch.load(tmp / f"rank{r}.pt") for r in range(2)]


def total_numel(learner):
    return sum(p.numel() for p in learner.model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("setup", SETUPS, ids=lambda s: s[0])
def test_two_fsdp_ranks_take_the_step_one_process_takes_holding_half_the_weights(two_fsdp_ranks, setup):
    name, options, lora = setup
    alone = build(options, lora, seed=1)
    initial = [p.detach().clone() for p in alone.params]
    expected = alone.step(batch(), 8)
    rank0, rank1 = two_fsdp_ranks[0][name], two_fsdp_ranks[1][name]
    assert rank1["rollout"] == []  # only rank 0 keeps a whole copy to play with ...
    for whole, gathered, p in zip(rank0["rollout"], rank0["gathered"], alone.params):
        assert torch.equal(whole, gathered.view_as(whole))  # ... refreshed from the shards after the step
        assert whole.shape == p.shape
    assert_same_step(alone, rank0["rollout"], options["lr"])
    moved = max((p.detach() - before).abs().max().item() for p, before in zip(alone.params, initial))
    assert moved > 1e-4
    assert rank0["metrics"]["loss"] == pytest.approx(expected["loss"], rel=1e-4, abs=1e-7)
    assert rank0["metrics"]["grad_norm"] == pytest.approx(expected["grad_norm"], rel=1e-3)  # the global norm
    assert rank0["metrics"]["by_role"].keys() == expected["by_role"].keys()  # filler micro-batches not counted
    for key, stats in expected["by_role"].items():
        assert rank0["metrics"]["by_role"][key]["pg_loss"] == pytest.approx(stats["pg_loss"], rel=1e-4, abs=1e-7)
    # each rank holds half of the model's weights (every weight, frozen base included) and of AdamW's moments
    total = sum(p.numel() for p in alone.model.parameters())
    assert rank0["shard_numel"] + rank1["shard_numel"] >= total
    assert max(rank0["shard_numel"], rank1["shard_numel"]) <= total // 2 + 64 * 1024
    moments = state_numel(alone)
    assert max(rank0["state_numel"], rank1["state_numel"]) <= moments // 2 + 4 * 1024


@pytest.mark.slow
@pytest.mark.parametrize("setup", SETUPS[:2], ids=lambda s: s[0])
def test_fsdp_checkpoints_as_one_process_and_resumes(two_fsdp_ranks, setup):
    """Rank 0's checkpoint state is one process's (same keys, whole tensors, same values);
    it resumes in one process, and on 2 sharded ranks: both take the second step one
    process takes from there."""
    name, options, lora = setup
    data = batch()
    alone = build(options, lora, seed=1)
    alone.step(data, 8)
    expected = alone.state_dict()
    rank0, rank1 = two_fsdp_ranks[0][name], two_fsdp_ranks[1][name]
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
            for p, w in zip(learner.params, rank0["rollout"]):
                p.copy_(w)
        learner.load_state_dict(copy.deepcopy(optimizer_state))
        learner.step(data, 8)
        return learner

    reference = second_step(expected)  # one process's own optimizer state ...
    assert_same_step(reference, [p.detach() for p in second_step(state).params], options["lr"])  # ... or theirs
    for a, b in zip(rank0["resumed"], rank1["resumed"]):  # and the 2 sharded ranks, resumed from their checkpoint
        assert torch.equal(a, b)
    resumed = [w.view_as(p) for w, p in zip(rank0["resumed"], reference.params)]
    assert_same_step(reference, resumed, options["lr"])
    assert max((a - b).abs().max().item() for a, b in zip(resumed, rank0["rollout"])) > 1e-4


@pytest.mark.slow
def test_rolekit_train_fsdp_checkpoint_resumes_in_one_process(tmp_path):
    """Full fine-tuning with distributed.learner = "fsdp": 2 ranks (rank 0 playing with its
    whole copy) train the step a plain run trains and write the checkpoint one process
    writes (weights and whole AdamW state); one process resumes it and its second step
    lands where a plain 2-step run's does."""
    assert_sharded_checkpoint_resumes_in_one_process(tmp_path, "fsdp")
