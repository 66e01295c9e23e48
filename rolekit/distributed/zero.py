"""A sharded learner under torchrun (``distributed.learner = "zero"``): AdamW's state and
the summed gradient split across the ranks (ZeRO stage 2), the weights whole on every rank.

Memory, full fine-tuning in fp32, per trained weight: one process, and every rank of
``"ddp"``, holds 16 bytes (weight, gradient, AdamW's two moments), and ``"ddp"``'s
all-reduce copies the gradient once more. Here a rank holds the weight (4 bytes), the
gradient only while its backward passes accumulate it (4), and 1/N of AdamW's moments
(8/N): the moments, half of the trained state, go from 8 bytes to 8/N. The reduction
moves the gradients, bucket by bucket, into a rank-major buffer, freeing each as it goes,
and a reduce-scatter leaves each rank the sum of its slice (4/N); AdamW steps the slices;
an all-gather per bucket writes every rank's updated slices into the whole weights.
Measured: BENCHMARKS.md, "Scale-out".

Each rank's slice of a parameter is a view into the parameter itself (a ``DTensor`` over
its flattened elements, ``Shard(0)``: torch.chunk's split), so AdamW updates this rank's
part in place and anything written into the whole weights -- a checkpoint loaded on
``--resume``, rank 0's snapshot swaps -- is what the slices hold. ``clip_grad_norm_`` over
the DTensor gradients takes the global norm (one all-reduce), as one process does.

The weights are not sharded here, so the ranks keep prompt sharing and train their own
numbers of micro-batches; ``distributed.learner = "fsdp"`` (:mod:`.fsdp`) shards them too,
at the cost of running every rank through the same passes.

Checkpoints are written by rank 0 in one process's format (``optimizer.state_dict()``
with whole tensors): the other ranks, waiting in :func:`rolekit.distributed.learner.serve`,
join the all-gathers of :meth:`ShardedLearner.state_dict`. So a checkpoint from one
process, ``"ddp"`` or ``"zero"`` resumes in any of them (``tests/test_distributed_learner.py``:
"zero" to one process and to "zero").
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from rolekit.distributed.learner import DataParallel
from rolekit.learner import Learner


BUCKET_ELEMENTS = 1 << 24  # per reduce-scatter / all-gather: 64 MiB of fp32 (the buffer's size, all ranks' parts)


class ShardedDataParallel(DataParallel):
    """This rank of a torchrun group, keeping its slice of the gradient and of AdamW's state.

    :meth:`shard_parameters` (called by :class:`ShardedLearner`) records the model's
    trained parameters (``whole``) and returns this rank's slices of them (``shards``),
    which the learner's AdamW steps.
    """

    def __init__(self, rank: int, world_size: int, device: Any = "cpu"):
        super().__init__(rank, world_size)
        self.device = torch.device(device)
        self.whole: list[torch.nn.Parameter] = []  # the model's trained parameters, whole on every rank
        self.shards: list[torch.nn.Parameter] = []  # this rank's slice of each: a DTensor viewing its elements
        self._mesh = None

    @property
    def learner_class(self) -> type:
        return ShardedLearner

    def _span(self, numel: int) -> tuple[int, int]:
        """(chunk, start) of a parameter of ``numel`` elements: every rank's slice is ``chunk``
        long, padded at the end (torch.chunk's split, DTensor's ``Shard(0)``)."""
        chunk = -(-numel // self.world_size)
        return chunk, min(self.rank * chunk, numel)

    def shard_parameters(self, params: Sequence[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
        """Rank 0's weights to every rank (a LoRA adapter's init is random), then this rank's
        slice of each parameter, as a view into it."""
        from torch.distributed.device_mesh import init_device_mesh

        for p in params:
            if not p.is_contiguous():  # a slice of a non-contiguous tensor is a copy, and the step would be lost
                raise ValueError(f"distributed.learner = 'zero' needs contiguous parameters; one of shape "
                                 f"{tuple(p.shape)} is not")
        super().broadcast_parameters(params)
        self._mesh = init_device_mesh(self.device.type, (self.world_size,))
        self.whole = list(params)
        self.shards = []
        for p in self.whole:
            chunk, start = self._span(p.numel())
            local = p.detach().view(-1)[start:start + chunk]
            self.shards.append(torch.nn.Parameter(self._dtensor(local, p.numel())))
        return self.shards

    def _dtensor(self, local: torch.Tensor, numel: int):
        from torch.distributed.tensor import DTensor, Shard

        return DTensor.from_local(local, self._mesh, [Shard(0)], run_check=False, shape=(numel,), stride=(1,))

    def broadcast_parameters(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Nothing: :meth:`shard_parameters` took rank 0's weights before slicing them."""

    def _groups(self) -> list[tuple[list[int], list[int], int]]:
        """The parameters in buckets of one dtype, as (indices, offset of each slice in a
        rank's part, part length): one collective per bucket lays every rank's slices out
        rank-major. A bucket holds at most ``BUCKET_ELEMENTS`` elements over all ranks (a
        larger parameter gets one of its own), so a reduction or gather never copies the
        whole model at once."""
        by_dtype: dict[torch.dtype, list[int]] = {}
        for i, p in enumerate(self.whole):
            by_dtype.setdefault(p.dtype, []).append(i)
        groups = []
        for indices in by_dtype.values():
            bucket: list[int] = []
            offsets: list[int] = []
            length = 0
            for i in indices:
                chunk = self._span(self.whole[i].numel())[0]
                if bucket and (length + chunk) * self.world_size > BUCKET_ELEMENTS:
                    groups.append((bucket, offsets, length))
                    bucket, offsets, length = [], [], 0
                bucket.append(i)
                offsets.append(length)
                length += chunk
            if bucket:
                groups.append((bucket, offsets, length))
        return groups

    def all_reduce_gradients(self, params: Sequence[torch.nn.Parameter], nonfinite: bool,
                             loss: float) -> tuple[bool, float]:
        """Sum the whole parameters' gradients over the ranks into this rank's slices
        (``params``: the shards) with one reduce-scatter per bucket, freeing each whole
        gradient as it is laid out. A parameter no rank reached keeps no gradient. Returns
        (did any rank see a non-finite loss, the summed loss); on a non-finite loss the
        gradients are dropped unreduced."""
        import torch.distributed as dist

        if len(params) != len(self.shards) or any(p is not s for p, s in zip(params, self.shards)):
            raise ValueError("ShardedDataParallel reduces the gradients of the shards it made (shard_parameters)")
        scalars = torch.tensor([float(nonfinite), loss] + [float(p.grad is not None) for p in self.whole],
                               dtype=torch.float64, device=self.device)
        dist.all_reduce(scalars)
        if scalars[0].item() > 0:
            for p in self.whole:
                p.grad = None
            return True, float(scalars[1].item())
        present = [x > 0 for x in scalars[2:].tolist()]
        for indices, offsets, length in self._groups():
            dtype = self.whole[indices[0]].dtype
            ranks = torch.zeros((self.world_size, length), dtype=dtype, device=self.device)  # rank-major
            for i, offset in zip(indices, offsets):
                p = self.whole[i]
                if p.grad is not None:
                    chunk = self._span(p.numel())[0]
                    flat = p.grad.reshape(-1)
                    for r in range(self.world_size):
                        piece = flat[r * chunk:(r + 1) * chunk]
                        ranks[r, offset:offset + piece.numel()] = piece
                    p.grad = None
            mine = torch.empty(length, dtype=dtype, device=self.device)
            dist.reduce_scatter_single(mine, ranks.view(-1))
            del ranks
            for i, offset in zip(indices, offsets):
                shard = self.shards[i]
                n = shard.to_local().numel()
                shard.grad = self._dtensor(mine[offset:offset + n], self.whole[i].numel()) if present[i] else None
        return False, float(scalars[1].item())

    @torch.no_grad()
    def gather(self) -> None:
        """Every rank's updated slices into the whole weights, on every rank (one all-gather per bucket)."""
        import torch.distributed as dist

        for indices, offsets, length in self._groups():
            dtype = self.whole[indices[0]].dtype
            mine = torch.zeros(length, dtype=dtype, device=self.device)
            for i, offset in zip(indices, offsets):
                local = self.shards[i].to_local()
                mine[offset:offset + local.numel()] = local.reshape(-1)
            ranks = torch.empty((self.world_size, length), dtype=dtype, device=self.device)
            dist.all_gather_single(ranks.view(-1), mine)
            for i, offset in zip(indices, offsets):
                flat = self.whole[i].view(-1)
                chunk = self._span(flat.numel())[0]
                for r in range(self.world_size):
                    piece = flat[r * chunk:(r + 1) * chunk]
                    piece.copy_(ranks[r, offset:offset + piece.numel()])

    def local(self, i: int, whole: torch.Tensor):
        """This rank's slice of ``whole`` (a tensor shaped like parameter ``i``, e.g. an AdamW
        moment from a checkpoint), as a DTensor like the parameter's shard."""
        chunk, start = self._span(whole.numel())
        return self._dtensor(whole.reshape(-1)[start:start + chunk].clone(), whole.numel())


class ShardedLearner(Learner):
    """The learner of ``distributed.learner = "zero"``: its AdamW holds this rank's slices
    (:meth:`ShardedDataParallel.shard_parameters`); after every optimizer step the ranks
    gather the updated slices into the whole weights, which the forward passes, rank 0's
    episodes and its checkpoints use. ``params`` are the model's trained parameters."""

    def __init__(self, model: Any, params: list[torch.nn.Parameter], cfg, *, data_parallel: ShardedDataParallel,
                 **kwargs):
        shards = data_parallel.shard_parameters(params)
        super().__init__(model, shards, cfg, data_parallel=data_parallel, **kwargs)
        self.optimizer.register_step_post_hook(lambda optimizer, args, kwargs: data_parallel.gather())

    def state_dict(self) -> dict:
        """AdamW's whole state, in one process's format. Every rank takes part (all-gathers):
        rank 0 calls it (a checkpoint), and asks the others, waiting in ``serve``, to join."""
        from torch.distributed.tensor import DTensor

        dp = self.data_parallel
        dp.request_state()
        state = self.optimizer.state_dict()
        whole = {}
        for i in sorted(state["state"]):  # the same order on every rank: the collectives pair up
            shape = dp.whole[i].shape
            whole[i] = {k: (v.full_tensor().detach().view(shape) if isinstance(v, DTensor) else v)
                        for k, v in sorted(state["state"][i].items())}
        return {"state": whole, "param_groups": state["param_groups"]}

    def load_state_dict(self, state: dict) -> None:
        """Load AdamW's whole state (one process's format; every rank reads the same
        checkpoint): each rank keeps its slice of every moment. No collective."""
        dp = self.data_parallel
        sliced = {}
        for i, entries in state["state"].items():
            shape = dp.whole[int(i)].shape
            sliced[i] = {k: (dp.local(int(i), v) if torch.is_tensor(v) and v.dim() > 0 and v.shape == shape else v)
                         for k, v in entries.items()}
        self.optimizer.load_state_dict({"state": sliced, "param_groups": state["param_groups"]})
