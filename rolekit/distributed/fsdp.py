"""A fully sharded learner under torchrun (``distributed.learner = "fsdp"``): the trained
model's weights, gradients and AdamW's state split across the ranks with torch's FSDP2
(``torch.distributed.fsdp.fully_shard``), one group per decoder layer and one for the rest
(embeddings, final norm, LM head: a tied head shares the embedding's weight, so they must
share a group).

Memory, per weight of the trained model: a rank holds 1/N of it at rest, its gradient's
slice, and 1/N of AdamW's moments; during a forward or backward pass one layer at a time is
gathered whole (and the group of the rest). A LoRA run shards the frozen base weights too.
Rank 0 plays the episodes between steps with a *whole* copy of the model (the rollout
engine's own weights, as in most RL stacks): the policy's model, which it keeps, while it
trains a sharded copy; after every optimizer step the ranks gather each trained parameter
(``full_tensor``, one at a time) and rank 0 writes it into its copy. So rank 0 holds one
whole model more than the others; ranks > 0 shard the policy's model in place and hold
only their slices.

FSDP's per-layer gathers and reduce-scatters are collectives: every rank must run the same
forward and backward passes in the same order. So the ranks run the same number of
micro-batches per step (:meth:`FullyShardedDataParallel.pad`: a short rank repeats the
batch's shortest sample as a micro-batch whose loss is multiplied by 0, so the gradients
are exact), each micro-batch as one forward pass of the whole model (prompt sharing, which
runs a data-dependent number of passes, is off: ``lockstep``), and a non-finite loss does
not end a rank's micro-batches early.

Checkpoints are written by rank 0 in one process's format: the weights from its whole
copy, AdamW's state gathered whole (:meth:`FsdpLearner.state_dict`, the other ranks join
from :func:`rolekit.distributed.learner.serve`). Resuming, in one process or under any
learner, reads that format: rank 0 loads the weights into its copy and
:meth:`FsdpLearner.load_state_dict` scatters them, and AdamW's state, into the shards
(``tests/test_distributed_fsdp.py``).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Sequence

import torch

from rolekit.distributed.learner import DataParallel
from rolekit.learner import Learner, policy_logprobs
from rolekit.types import Sample


class FullyShardedDataParallel(DataParallel):
    """This rank of a torchrun group, training a model sharded by FSDP2."""

    lockstep = True  # every rank runs the same passes (FSDP's collectives pair up)

    def __init__(self, rank: int, world_size: int, device: Any = "cpu"):
        super().__init__(rank, world_size)
        self.device = torch.device(device)
        from torch.distributed.device_mesh import init_device_mesh

        self.mesh = init_device_mesh(self.device.type, (world_size,))
        if self.device.type == "cpu":
            _fixed_mmap_threshold()

    @property
    def learner_class(self) -> type:
        return FsdpLearner

    @property
    def holds_whole_model(self) -> bool:
        """Only rank 0 keeps the policy's model whole (it plays); the others shard it in place."""
        return self.rank == 0

    def pad(self, published: Sequence[Sample], samples: list[Sample],
            buckets: list[list[int]]) -> tuple[list[Sample], list[list[int]], int]:
        """``samples`` and ``buckets`` (this rank's micro-batches) with as many more as make
        every rank's count the largest one's: each the batch's shortest sample, appended to
        ``samples``. Returns (samples, buckets, how many were added); the learner weighs the
        added ones 0."""
        import torch.distributed as dist

        count = torch.tensor([len(buckets)], device=self.device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        missing = int(count.item()) - len(buckets)
        if missing == 0:
            return samples, buckets, 0
        filler = min(published, key=lambda s: (s.num_tokens, len(s.choice_ids)))
        samples = list(samples) + [filler]
        return samples, buckets + [[len(samples) - 1]] * missing, missing

    def all_reduce_gradients(self, params: Sequence[torch.nn.Parameter], nonfinite: bool,
                             loss: float) -> tuple[bool, float]:
        """FSDP's backward passes already reduce-scattered the gradients into the shards;
        here only (did any rank see a non-finite loss, the summed loss)."""
        import torch.distributed as dist

        scalars = torch.tensor([float(nonfinite), loss], dtype=torch.float64, device=self.device)
        dist.all_reduce(scalars)
        return bool(scalars[0].item() > 0) or not bool(torch.isfinite(scalars[1])), float(scalars[1].item())

    def broadcast_parameters(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Nothing: :class:`FsdpLearner` took rank 0's weights before sharding them."""


class _Forward(torch.nn.Module):
    """The FSDP root: one micro-batch's ``policy_logprobs`` as one forward call, so the
    root group (embeddings, norm, tied LM head) is gathered around the decoder and head
    that the learner runs separately."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, samples: Sequence[Sample], device: Any, kw: dict):
        return policy_logprobs(self.model, samples, device, **kw)


class FsdpLearner(Learner):
    """The learner of ``distributed.learner = "fsdp"``. ``model``: the policy's model (rank 0
    keeps it whole for its episodes and checkpoints and trains a sharded copy; the other
    ranks shard it in place); ``params``: its trained parameters."""

    def __init__(self, model: Any, params: list[torch.nn.Parameter], cfg, *,
                 data_parallel: FullyShardedDataParallel, reference=None, **kwargs):
        from torch.distributed.fsdp import fully_shard

        from rolekit.backends.hf import split_model

        dp = data_parallel
        name_of = {id(p): n for n, p in model.named_parameters()}
        names = [name_of[id(p)] for p in params]
        DataParallel.broadcast_parameters(dp, params)  # rank 0's weights (a LoRA adapter's init is random)
        train = copy.deepcopy(model) if dp.holds_whole_model else model
        groups = [fully_shard(layer, mesh=dp.mesh) for layer in split_model(train)[0].layers]
        root = fully_shard(_Forward(train), mesh=dp.mesh)
        for group in [*groups, root]:  # sum the ranks' gradients (FSDP averages them): the losses' denominators
            group.set_gradient_divide_factor(1.0)  # are the whole batch's already (losses.token_weights)
            group.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no PREMUL_SUM)
        own = dict(root.named_parameters())
        trained = [own[f"model.{n}"] for n in names]  # fully_shard replaced them with sharded DTensors
        if not dp.holds_whole_model:
            for p in params:  # the replaced whole tensors (the policy still names them): free their storage
                p.data = torch.empty(0, dtype=p.dtype, device=p.device)
        if reference is not None and hasattr(train, "disable_adapter"):  # LoRA: the sharded base, adapter off
            reference = self._without_adapter
        super().__init__(root, trained, cfg, data_parallel=dp, reference=reference, **kwargs)
        self.train_model = train
        self.rollout = list(params) if dp.holds_whole_model else []  # rank 0: the whole weights it plays with
        self.optimizer.register_step_post_hook(lambda optimizer, args, kwargs: self.refresh())

    @contextlib.contextmanager
    def _without_adapter(self):
        with self.train_model.disable_adapter():
            yield self.model

    def _forward(self, model: Any, batch: Sequence[Sample], **kw):
        if model is not self.model:  # a whole reference model (full fine-tuning's copy): a plain pass
            return super()._forward(model, batch, **kw)
        from rolekit.backends.hf import autocast

        with autocast(self.device, self.autocast_bf16):
            return self.model(batch, self.device, kw)

    @torch.no_grad()
    def refresh(self) -> None:
        """Each trained parameter gathered whole, one at a time; rank 0 writes it into the
        weights it plays with. Every rank takes part."""
        for i, p in enumerate(self.params):
            whole = p.full_tensor()
            if self.rollout:
                self.rollout[i].copy_(whole.view_as(self.rollout[i]))
            del whole

    def shard_numel(self) -> int:
        """Elements of the trained model's weights this rank holds (its slices)."""
        from torch.distributed.tensor import DTensor

        return sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in self.model.parameters())

    def state_dict(self) -> dict:
        """AdamW's whole state, in one process's format (whole tensors keyed by parameter
        index). Every rank takes part (all-gathers): rank 0 calls it, and asks the others,
        waiting in ``serve``, to join."""
        from torch.distributed.tensor import DTensor

        self.data_parallel.request_state()
        state = self.optimizer.state_dict()
        whole = {}
        for i in sorted(state["state"]):  # the same order on every rank: the collectives pair up
            whole[i] = {k: (v.full_tensor().detach().cpu() if isinstance(v, DTensor) else v)
                        for k, v in sorted(state["state"][i].items())}
        return {"state": whole, "param_groups": state["param_groups"]}

    def load_state_dict(self, state: dict) -> None:
        """Resume: rank 0's weights (its whole copy holds the checkpoint's) scattered into the
        shards, then AdamW's whole state (one process's format; every rank reads the same
        checkpoint), each rank keeping its slice of every moment. Every rank takes part."""
        from torch.distributed.tensor import DTensor, distribute_tensor

        with torch.no_grad():
            for i, p in enumerate(self.params):
                source = self.rollout[i].detach() if self.rollout else torch.empty(p.shape, dtype=p.dtype,
                                                                                   device=self.device)
                p.to_local().copy_(distribute_tensor(source.contiguous(), p.device_mesh, p.placements,
                                                     src_data_rank=0).to_local())
        sliced = {}
        for i, entries in state["state"].items():
            p = self.params[int(i)]
            sliced[i] = {k: (distribute_tensor(v.to(self.device), p.device_mesh, p.placements, src_data_rank=None)
                             if isinstance(p, DTensor) and torch.is_tensor(v) and v.shape == p.shape else v)
                         for k, v in entries.items()}
        self.optimizer.load_state_dict({"state": sliced, "param_groups": state["param_groups"]})


def _fixed_mmap_threshold(nbytes: int = 1 << 20) -> None:
    """glibc: allocations of ``nbytes`` or more always from mmap, returned on free. FSDP
    gathers and frees a layer's weights at every pass; glibc's default raises its mmap
    threshold after such a free (up to 32 MiB), after which those buffers come from the heap,
    fragment it and are never returned: SmolLM2-135M's step then peaked ~1.2 GiB higher per
    rank (BENCHMARKS.md, "Scale-out"). Same as ``MALLOC_MMAP_THRESHOLD_=1048576``. Nothing
    without glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, nbytes)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass
