"""A data-parallel learner on torch.distributed, launched by torchrun.

    torchrun --nproc_per_node 2 -m rolekit.cli train CONFIG        # 2 ranks on this machine
    torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node 8 -m rolekit.cli train CONFIG

Rank 0 is the driver: it plays the episodes (in its own process, or through Ray rollout
workers: ``distributed.ray_address``), estimates the advantages, and writes metrics,
evaluations and checkpoints (once). Every step it hands the batch to the other ranks
(``publish``); each rank trains its shard of it (``shard``, balanced by tokens) with the
*whole* batch's loss denominators (``losses.token_weights`` is global), so the shards'
gradients sum to exactly the batch's gradient. One all-reduce sums them
(``all_reduce_gradients``); every rank then clips and steps the same AdamW on the same
gradient, and the weights stay identical on every rank -- the weights one process would
reach on the batch, to float rounding (``tests/test_distributed_learner.py``).

Why not torch's ``DistributedDataParallel`` wrapper: the learner runs the decoder and the
LM head separately (``backends.hf.split_model``, so the (B, L, V) logits are never built),
and DDP arms its reducer only in the wrapper's own ``forward``. One flat all-reduce per
dtype after the backward passes is what DDP does, without overlapping it with them.

``distributed.learner = "zero"`` (:mod:`.zero`) keeps the same protocol and splits AdamW's
state and the summed gradient across the ranks instead of holding them whole on each;
``"fsdp"`` (:mod:`.fsdp`) splits the weights too (torch's FSDP2).

Backends: gloo on the CPU, NCCL on CUDA (each rank on ``cuda:LOCAL_RANK``). Only gloo with
2 CPU processes has been run (this repository's machine has no GPU).
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Sequence

import torch

from rolekit.learner import Learner, completions
from rolekit.types import Sample


class DataParallel:
    """This process's place in a torch.distributed group: rank ``rank`` of ``world_size``."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size

    lockstep = False  # must every rank run the same forward passes? (FSDP: :mod:`.fsdp`)

    @property
    def learner_class(self) -> type:
        """The learner these ranks run: every rank holds the whole optimizer state."""
        return Learner

    @property
    def holds_whole_model(self) -> bool:
        """Does the policy's model stay whole on this rank (resuming loads a checkpoint into it)?"""
        return True

    @staticmethod
    def from_env(device: Any = "cpu", learner: str = "ddp") -> "DataParallel | None":
        """The group torchrun started this process in (joined on first call: gloo on the CPU,
        NCCL on CUDA), or None in a plain run (``WORLD_SIZE`` unset or 1). ``learner``
        (``distributed.learner``): "ddp", "zero" (a :class:`.zero.ShardedDataParallel`) or
        "fsdp" (a :class:`.fsdp.FullyShardedDataParallel`)."""
        if learner not in ("ddp", "zero", "fsdp"):
            raise ValueError(f"distributed.learner must be 'ddp', 'zero' or 'fsdp', got {learner!r}")
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        import torch.distributed as dist

        if not dist.is_initialized():
            cuda = torch.device(device).type == "cuda"
            if cuda:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl" if cuda else "gloo")
        if learner == "zero":
            from rolekit.distributed.zero import ShardedDataParallel

            return ShardedDataParallel(dist.get_rank(), dist.get_world_size(), device)
        if learner == "fsdp":
            from rolekit.distributed.fsdp import FullyShardedDataParallel

            return FullyShardedDataParallel(dist.get_rank(), dist.get_world_size(), device)
        return DataParallel(dist.get_rank(), dist.get_world_size())

    # --- the batch ----------------------------------------------------------------------

    def publish(self, samples: Sequence[Sample], max_new_tokens: int) -> list[Sample]:
        """Rank 0: send the step's batch to the other ranks (waiting in :func:`serve`).
        The others already hold it; every rank gets the batch back."""
        if self.rank == 0:
            _broadcast(("step", list(samples), max_new_tokens))
        return list(samples)

    def request_state(self) -> None:
        """Rank 0: ask the other ranks (waiting in :func:`serve`) to call their learner's
        ``state_dict`` with it, for a learner whose state is gathered across ranks."""
        if self.rank == 0:
            _broadcast(("state",))

    def stop(self) -> None:
        """Rank 0: tell the other ranks the run is over (their :func:`serve` returns)."""
        if self.rank == 0:
            _broadcast(None)

    def shard(self, samples: Sequence[Sample]) -> list[Sample]:
        """This rank's part of ``samples`` (in their order): each sample, the costliest first,
        goes to the rank with the fewest tokens so far. The same split on every rank."""
        cost = [len(s.prompt_ids) + sum(len(c) for c in completions(s)) for s in samples]
        load = [0] * self.world_size
        mine = []
        for i in sorted(range(len(samples)), key=lambda i: (-cost[i], i)):
            rank = min(range(self.world_size), key=lambda r: (load[r], r))
            load[rank] += cost[i]
            if rank == self.rank:
                mine.append(i)
        return [samples[i] for i in sorted(mine)]

    # --- reductions ---------------------------------------------------------------------

    def broadcast_parameters(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Every rank takes rank 0's values of ``params`` (a LoRA adapter's init is random)."""
        import torch.distributed as dist

        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)

    def all_reduce_gradients(self, params: Sequence[torch.nn.Parameter], nonfinite: bool,
                             loss: float) -> tuple[bool, float]:
        """Sum every parameter's gradient over the ranks, in place (a rank whose shard did not
        reach a parameter adds zeros; one no rank reached keeps no gradient, as in one process).
        Returns (did any rank see a non-finite loss, the summed loss). One all-reduce per dtype."""
        import torch.distributed as dist

        if not params:
            return nonfinite, loss
        device = params[0].device
        by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = defaultdict(list)
        for p in params:
            by_dtype[p.dtype].append(p)
        # scalars first: the flags, the loss and which parameters have a gradient on any rank
        scalars = torch.tensor([float(nonfinite), loss] + [float(p.grad is not None) for p in params],
                               dtype=torch.float64, device=device)
        dist.all_reduce(scalars)
        for dtype, group in by_dtype.items():
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group])
            dist.all_reduce(flat)
            offset = 0
            for p in group:
                n = p.numel()
                p.grad = flat[offset:offset + n].view_as(p).clone()
                offset += n
        for p, present in zip(params, scalars[2:].tolist()):
            if not present:
                p.grad = None
        return bool(scalars[0].item() > 0), float(scalars[1].item())

    def sum_metrics(self, per_key: dict, totals: tuple) -> tuple[dict, tuple]:
        """The learner's per-(game, role) sums and token counts added up over the ranks."""
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, ({k: dict(v) for k, v in per_key.items()}, tuple(totals)))
        merged: dict = defaultdict(lambda: defaultdict(float))
        for keys, _ in gathered:
            for key, stats in keys.items():
                for name, x in stats.items():
                    merged[key][name] += x
        return merged, tuple(sum(t[i] for _, t in gathered) for i in range(len(totals)))


def _broadcast(obj: Any) -> Any:
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def serve(learner) -> None:
    """Ranks > 0: take each batch rank 0 publishes (``learner.step``) and join each gathered
    ``learner.state_dict`` it asks for, until it stops."""
    while (message := _broadcast(None)) is not None:
        kind, *args = message
        if kind == "step":
            learner.step(*args)
        elif kind == "state":
            learner.state_dict()
        else:
            raise ValueError(f"rank {learner.data_parallel.rank}: unknown message {kind!r} from rank 0")


def follow(trainer) -> None:
    """What ranks > 0 of a torchrun launch do: build the same Trainer (model, optimizer, resumed
    state), then :func:`serve` its learner until rank 0 stops. They play no episodes and
    write nothing."""
    serve(trainer.learner)
