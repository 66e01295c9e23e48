"""Rollouts on a real local Ray cluster (2 CPUs, 2 rollout workers) play the same episodes as
one process for the same seeds, through whole training steps (weights synced after each)."""

import json
import os
import subprocess
import sys

import attrs
import pytest
import ray
import rolekit_games
import torch

from rolekit.backends.hf import HFBackend
from rolekit.config import from_dict
from rolekit.engine import Trainer
from rolekit.hookspecs import hookimpl
from rolekit.plugins import Kernel
from rolekit.types import GenerationRequest

RUN = {
    "seed": 0,
    "model": {"name": "tiny-random"},
    "lora": {"r": 4, "alpha": 8},
    "rollout": {"samples_per_step": 12, "max_new_tokens": 6, "concurrency": 8, "batch_size": 8,
                "seeded_sampling": True},
    # old logprobs from the learner's own pass: generation's differ by float rounding with the batch
    # shape, and AdamW magnifies that in near-zero gradients; so the weights can be compared exactly
    "algorithm": {"steps": 3, "lr": 5e-3, "recompute_logprobs": True},
    "snapshots": {"every": 1, "pool_size": 2},
    "eval": {"every": 0},
    "checkpoint": {"every": 0},
    "curriculum": [
        {"game": "echo", "options": {"letters": "AB"}},  # free text: generate
        {"game": "kuhn_poker", "options": {"choose": True}, "seats": {"player_1": "snapshot"}},  # choices: score
        {"game": "nim", "weight": 0.5},  # free text, multi-turn (after=turn)
    ],
}


class Recorder:
    """An episode observer (the rolekit_episode_end hook): keeps every finished episode."""

    def __init__(self):
        self.episodes = []

    @hookimpl
    def rolekit_episode_end(self, episode):
        self.episodes.append(episode)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def train(tmp_path, name, **distributed):
    recorder = Recorder()
    config = from_dict({**RUN, "distributed": distributed})
    trainer = Trainer(config, tmp_path / name, kernel=Kernel([rolekit_games, recorder], load_entrypoints=False),
                      quiet=True)
    try:
        history = trainer.run()
    finally:
        if hasattr(trainer.policy.backend, "close"):
            trainer.policy.backend.close()
    return trainer, history, recorder.episodes


def played(episodes):
    """What must match: every turn's tokens and who answered it, each episode's rewards."""
    return [(e.game, e.seed, e.seats, e.error, e.rewards, e.returns,
             [(t.id, t.role, t.responder, t.prompt_ids, t.completion_ids, t.choice_ids, t.text) for t in e.turns])
            for e in episodes]


@pytest.mark.slow
def test_two_ray_workers_play_the_same_episodes_as_one_process(tmp_path, cluster):
    alone, alone_history, alone_episodes = train(tmp_path, "alone")
    spread, spread_history, spread_episodes = train(tmp_path, "ray", ray_address="local", rollout_workers=2)

    assert type(spread.policy.backend).__name__ == "RayBackend" and len(ray.nodes()) == 1
    assert spread.policy.backend.calls > 0 and spread.policy.backend.tokens_generated > 0
    assert {e.game for e in alone_episodes} == {"echo", "kuhn_poker", "nim"}
    assert any(t.responder.startswith("snapshot:") for e in alone_episodes for t in e.turns)  # pool swapped in
    assert len(alone_episodes) == len(spread_episodes) > 20
    assert played(spread_episodes) == played(alone_episodes)
    for a, b in zip(alone_episodes, spread_episodes):  # another batch shape: logprobs to float rounding
        for s, t in zip(a.turns, b.turns):
            assert s.logprobs == pytest.approx(t.logprobs, abs=1e-4)
            assert (s.choice_logprob is None) == (t.choice_logprob is None)
    assert [m["samples"] for m in spread_history] == [m["samples"] for m in alone_history]
    assert [m["loss"] for m in spread_history] == pytest.approx([m["loss"] for m in alone_history], abs=1e-5)
    for name, p in alone.policy.params.items():  # the weights the workers were fed, step after step
        assert torch.equal(p, spread.policy.params[name]), name


@pytest.fixture(scope="module")
def remote(cluster, tmp_path_factory):
    """A trainer whose policy generates on 2 Ray workers (its backend: a RayBackend)."""
    config = from_dict({**RUN, "distributed": {"ray_address": "local", "rollout_workers": 2}})
    trainer = Trainer(config, tmp_path_factory.mktemp("remote"), quiet=True,
                      kernel=Kernel([rolekit_games], load_entrypoints=False))
    yield trainer
    trainer.policy.backend.close()


def test_without_a_sync_the_workers_play_stale_weights(remote):
    """The check above can fail: workers that miss the update play other episodes."""
    backend = remote.policy.backend
    requests = [GenerationRequest(remote.policy.chat.encode("Say A."), max_new_tokens=8, seed=k) for k in range(4)]
    before = backend.generate(requests)
    with torch.no_grad():
        for p in remote.policy.params.values():
            p.add_(torch.randn_like(p))  # lora_B moves off zero: the adapter now changes the output
    assert backend.generate(requests) == before  # not synced: the workers still hold the old adapter
    backend.sync()
    after = backend.generate(requests)
    assert after != before
    local = HFBackend(remote.policy.model, remote.policy.chat)
    assert [g.completion_ids for g in after] == [g.completion_ids for g in local.generate(requests)]


def test_a_worker_answers_each_request_as_the_driver_would_alone(remote):
    """RayBackend splits a round across the workers; every answer is the one the
    driver's HF backend gives the same request alone."""
    backend, chat = remote.policy.backend, remote.policy.chat
    backend.sync()
    local = HFBackend(remote.policy.model, chat, max_batch_size=1)
    requests = [GenerationRequest(chat.encode(f"Count to {k}."), max_new_tokens=3 + k % 4, temperature=0.7 + k / 10,
                                  top_k=50 * (k % 2), top_p=1.0 - 0.05 * (k % 3), seed=1000 + k)
                for k in range(7)]
    requests.append(attrs.evolve(requests[0], temperature=0.0, seed=None))  # greedy
    spread = backend.generate(requests)
    assert [g.completion_ids for g in spread] == [local.generate([r])[0].completion_ids for r in requests]
    pairs = [(chat.encode("Pick one."), chat.text_ids(c)) for c in ("check", "bet", "fold")]
    flat = lambda scored: [x for values in scored for x in values]  # noqa: E731
    assert flat(backend.score(pairs, temperature=1.0)) == pytest.approx(flat(local.score(pairs, temperature=1.0)),
                                                                        abs=1e-4)


def test_judge_frozen_under_ray_is_the_base_model(remote):
    """judge:frozen disables the adapter in the driver's model, so judges generate in the
    driver, not on the workers (which hold the trained adapter)."""
    from rolekit.verifiers.judges import JudgeItem, JudgeRequest

    with torch.no_grad():
        for p in remote.policy.params.values():
            p.add_(torch.randn_like(p))  # an adapter that changes what the model writes
    remote.policy.backend.sync()
    items = tuple(JudgeItem(f"Is {k} + {k} = {2 * k}?", "yes") for k in range(4))
    said = {spec: [v.detail for v in remote.judges.get(spec).respond([JudgeRequest("g", spec, items)])[0]]
            for spec in ("judge:frozen", "judge:tiny-random", "judge:policy")}  # what each judge wrote
    assert said["judge:frozen"] == said["judge:tiny-random"]  # the base model, loaded afresh
    assert said["judge:policy"] != said["judge:frozen"]  # the adapter does change the answers


@pytest.mark.slow
def test_a_plain_run_imports_no_ray(tmp_path):
    """Single-process mode stays plain Python: training without ray_address never imports Ray."""
    script = f"""
import json, sys
from rolekit.config import from_dict
from rolekit.engine import Trainer
from rolekit.plugins import Kernel
run = json.loads({json.dumps(json.dumps({**RUN, "curriculum": RUN["curriculum"][:1]}))})
run["algorithm"]["steps"] = 1
Trainer(from_dict(run), {str(tmp_path / "plain")!r}, kernel=Kernel(load_entrypoints=False), quiet=True).run()
assert "ray" not in sys.modules, "ray was imported"
print("no ray")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and "no ray" in done.stdout, done.stderr[-2000:]
