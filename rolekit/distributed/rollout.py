"""Rollout workers on Ray: the policy's generation spread over actors, each with its own backend.

The games stay in the driver. The scheduler (``table.Scheduler``, the same code as in one
process) runs every episode's coroutine, collects the asks of a round and hands them to
the policy's backend; here that backend is a :class:`RayBackend`, which splits the round's
requests over the :class:`RolloutWorker` actors, each holding a copy of the model and a
backend of its own (``rollout.backend``: the HF backend, or vLLM on a GPU). Games, task
pools, turn ids and rewards never leave the driver, so a game runs and can be debugged
exactly as in one process; only the costly part, the model, runs on the workers.

After every update the trainer calls ``sync``; the next call then sends the trainable
weights (the LoRA adapter, or the full weights) to every worker once, through Ray's object
store. Snapshot opponents swap their weights in the driver (``Policy.using``), which syncs
too.

Same results as one process: the policy samples with ``rollout.seeded_sampling`` here (the
engine turns it on): every ask's answers are drawn from a seed derived from its episode's
seed (``table.ask_seed``, ``backends.hf.SeededSampler``), not from a global RNG whose
stream depends on how requests were batched. A run with ``seeded_sampling = true`` in one
process plays the same episodes -- token ids, logprobs to float rounding, rewards -- as with
any number of workers (``tests/test_distributed_rollout.py``).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Sequence

import attrs
import torch

from rolekit.types import Generation, GenerationRequest


def connect(address: str, *, num_cpus: int | None = None) -> None:
    """Join (``"auto"``, ``"HOST:PORT"``) or start (``"local"``) a Ray cluster, unless this
    process is already connected (a test's ``ray.init``)."""
    try:
        import ray
    except ImportError:
        raise ImportError("distributed.ray_address needs Ray: pip install 'rolekit[distributed]'") from None
    if ray.is_initialized():
        return
    if address == "local":
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)


class RolloutWorker:
    """A Ray actor: the policy's model (built as the trainer builds it) and its backend.

    It starts from the base model; the trainable weights arrive with the first ``load``.
    ``threads``: torch threads (Ray sets OMP_NUM_THREADS to the actor's CPUs)."""

    def __init__(self, config, threads: int):
        from rolekit.engine import Policy

        torch.set_num_threads(max(1, threads))
        # the same model, LoRA and backend as the driver's, generating here and not on Ray again
        self.policy = Policy(attrs.evolve(config, distributed=attrs.evolve(config.distributed, ray_address=None)))

    def ready(self) -> bool:
        return True

    def load(self, weights: dict[str, torch.Tensor]) -> None:
        self.policy._load(weights)
        self.policy.backend.sync()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return self.policy.backend.generate(requests)

    def score(self, pairs, temperature: float, batch_size: int | None) -> list[tuple[float, ...]]:
        return self.policy.backend.score(pairs, temperature=temperature, batch_size=batch_size)


class RayBackend:
    """The policy's backend in the driver, generating on ``distributed.rollout_workers`` Ray actors.

    ``model``/``params``: the driver's model and its trainable parameters (by name), whose
    values are sent to the workers after each ``sync``. ``calls`` counts rounds handed out and
    ``tokens_generated`` the tokens the workers returned, as ``HFBackend`` does.
    """

    name = "ray"

    def __init__(self, config, model: Any, params: dict[str, torch.nn.Parameter]):
        import ray

        dist = config.distributed
        start = time.perf_counter()
        connect(dist.ray_address, num_cpus=dist.num_cpus)
        actor = ray.remote(num_cpus=dist.worker_cpus, num_gpus=dist.worker_gpus)(RolloutWorker)
        self.workers = [actor.remote(config, int(dist.worker_cpus)) for _ in range(dist.rollout_workers)]
        ray.get([w.ready.remote() for w in self.workers])
        self.startup_seconds = time.perf_counter() - start
        print(f"rolekit: {len(self.workers)} Ray rollout workers ready in {self.startup_seconds:.1f} s "
              f"({dist.ray_address})", file=sys.stderr)
        self.model, self.params = model, params
        self.max_batch_size = config.rollout.batch_size
        self.calls = 0
        self.tokens_generated = 0
        self.version = 0
        self._stale = True  # the workers' trainable weights are not the driver's yet

    def sync(self, model: Any = None) -> None:
        """The driver's weights changed (an update, a snapshot swapped in or out): the next
        call sends them to every worker."""
        if model is not None:
            self.model = model
        self.version += 1
        self._stale = True

    def _push(self) -> None:
        import ray

        if self._stale:
            weights = ray.put({n: p.detach().cpu() for n, p in self.params.items()})  # once, shared by all workers
            ray.get([w.load.remote(weights) for w in self.workers])
            self._stale = False

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        import ray

        if not requests:
            return []
        self._push()
        shards = split([len(r.prompt_ids) + r.max_new_tokens for r in requests], len(self.workers))
        futures = [(shard, w.generate.remote([requests[i] for i in shard]))
                   for w, shard in zip(self.workers, shards) if shard]
        out: list[Generation | None] = [None] * len(requests)
        for shard, future in futures:
            for i, generation in zip(shard, ray.get(future)):
                out[i] = generation
        self.calls += 1
        self.tokens_generated += sum(len(g.completion_ids) for g in out)
        return out  # type: ignore[return-value]

    def score(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *, temperature: float = 1.0,
              batch_size: int | None = None) -> list[tuple[float, ...]]:
        """``HFBackend.score`` on the workers; the pairs of one prompt stay together (a
        worker runs each distinct prompt once for all its completions)."""
        import ray

        if not pairs:
            return []
        self._push()
        by_prompt: dict[tuple[int, ...], list[int]] = {}
        for i, (prompt, _) in enumerate(pairs):
            by_prompt.setdefault(tuple(prompt), []).append(i)
        groups = list(by_prompt.values())
        costs = [sum(len(pairs[i][0]) + len(pairs[i][1]) for i in g) for g in groups]
        shards = [[i for k in shard for i in groups[k]] for shard in split(costs, len(self.workers))]
        futures = [(shard, w.score.remote([pairs[i] for i in shard], temperature, batch_size))
                   for w, shard in zip(self.workers, shards) if shard]
        out: list[tuple[float, ...] | None] = [None] * len(pairs)
        for shard, future in futures:
            for i, values in zip(shard, ray.get(future)):
                out[i] = values
        self.calls += 1
        return out  # type: ignore[return-value]

    def close(self) -> None:
        """End the worker actors (the Ray cluster itself stays up)."""
        import ray

        for w in self.workers:
            ray.kill(w)
        self.workers = []


def split(costs: Sequence[float], parts: int) -> list[list[int]]:
    """Indices of ``costs`` in ``parts`` shards of about equal total cost, each in index order:
    the costliest first, each to the shard with the least so far."""
    load = [0.0] * parts
    shards: list[list[int]] = [[] for _ in range(parts)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        k = min(range(parts), key=lambda k: (load[k], k))
        load[k] += costs[i]
        shards[k].append(i)
    return [sorted(s) for s in shards]
