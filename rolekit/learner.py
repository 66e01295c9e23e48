"""The learner: token-budget micro-batches, PPO-clip loss, one optimizer step per epoch.

Precision: the trained parameters and AdamW's state keep their own dtype (fp32 for full
fine-tuning: ``models.training_dtype``; a LoRA adapter is fp32 too); on CUDA the forward
passes run under bf16 autocast (``backends.hf.autocast``), so an update of ~lr per weight
is not rounded away as it would be on bf16 weights.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import defaultdict
from typing import Any, Sequence

import attrs
import torch

from rolekit.backends.hf import (MIN_SHARED_PREFIX, autocast, autocast_on, run_continuations, run_prompts,
                                 share_prompts, split_model)
from rolekit.losses import kl_estimate, ppo_clip, token_weights
from rolekit.types import Sample


def micro_batches(samples: Sequence[Sample], max_tokens: int, shared: bool = True) -> list[list[int]]:
    """Indices of ``samples`` in buckets of at most ``max_tokens`` computed tokens.

    A bucket computes its prompts' shared prefix once, each distinct prompt's rest once
    (padded to the longest) and each completion once (padded to the longest): see
    ``bucket_cost``. ``shared``: samples are ordered by prompt tokens, so samples sharing a
    prompt or a header land together; otherwise by prompt length, so padding stays small;
    then by completion length. A shared bucket ends where the next sample shares nothing
    with it (another game or role); a single sample over the budget gets a bucket of its own.

    Each candidate's cost comes from the bucket's running totals (:class:`_Bucket`), so
    the whole pass is linear in the samples' tokens, not quadratic in a bucket's size.
    """
    def key(i: int):
        s = samples[i]
        if shared:  # in token order: neighbours share the longest prefixes (header, rules, identical prompts)
            return s.prompt_ids, len(s.completion_ids)
        return len(s.prompt_ids), s.prompt_ids, len(s.completion_ids)

    buckets: list[list[int]] = []
    current: list[int] = []
    bucket = _Bucket(shared)
    for i in sorted(range(len(samples)), key=key):
        real, padded = bucket.cost_with(samples[i])
        alone = _Bucket(shared).cost_with(samples[i])[0]
        # shared: a sample that shares nothing with the bucket (another game or role) starts
        # the next one rather than cost the bucket its common prefix
        if current and (padded > max_tokens or (shared and real - bucket.cost()[0] >= alone)):
            buckets.append(current)
            current, bucket = [], _Bucket(shared)
        current.append(i)
        bucket.add(samples[i])
    if current:
        buckets.append(current)
    return buckets


def completions(s: Sample) -> tuple[tuple[int, ...], ...]:
    """What the learner runs after a sample's prompt: its completion, or every legal answer of a choice."""
    return s.choice_ids or (s.completion_ids,)


def trained_positions(s: Sample) -> int:
    """Positions a sample contributes to the loss: its completion tokens, or 1 for a choice."""
    return 1 if s.choice_ids else len(s.completion_ids)


def bucket_cost(batch: Sequence[Sample], shared: bool = True) -> tuple[int, int]:
    """(real, padded) tokens one micro-batch computes: the shared prefix once, the rest of
    each distinct prompt, and the completions (``shared``); or every prompt + completion in full."""
    bucket = _Bucket(shared)
    for s in batch:
        bucket.add(s)
    return bucket.cost()


class _Bucket:
    """Running totals of a micro-batch: ``bucket_cost`` with one more sample in O(its tokens).

    ``shared``: the distinct prompts (their count, total and shortest/longest length, and
    the prefix all of them share: the common prefix of a set is the shortest common prefix
    of its first member with each other one) and the completions (count, total, longest).
    Not shared: the (prompt + completion) rows' count, total and longest.
    """

    def __init__(self, shared: bool):
        self.shared = shared
        self.prompts: set[tuple[int, ...]] = set()  # distinct prompts (shared)
        self.first: tuple[int, ...] = ()  # the first of them
        self.totals = (0, 0, 0, 0, 0, 0, 0, 0)  # see _with

    def add(self, s: Sample) -> None:
        self.totals = self._with(s)
        if self.shared:
            self.first = self.first or tuple(s.prompt_ids)
            self.prompts.add(tuple(s.prompt_ids))

    def cost_with(self, s: Sample) -> tuple[int, int]:
        """``bucket_cost`` of this bucket with ``s`` added (the bucket unchanged)."""
        return self._cost(*self._with(s))

    def cost(self) -> tuple[int, int]:
        """``bucket_cost`` of this bucket."""
        return self._cost(*self.totals)

    def _with(self, s: Sample) -> tuple[int, ...]:
        """The totals after adding ``s``: (distinct prompts, their common prefix before
        ``shared_prefix``'s rules, shortest, longest, their tokens; rows, their tokens, the
        widest) -- rows being completions (shared) or whole prompt + completion rows."""
        distinct, common, shortest, longest, prompt_tokens, rows, row_tokens, widest = self.totals
        own = completions(s)
        prompt = tuple(s.prompt_ids)
        if not self.shared:
            return (0, 0, 0, 0, 0, rows + len(own), row_tokens + sum(len(prompt) + len(c) for c in own),
                    max(widest, max(len(prompt) + len(c) for c in own)))
        rows, row_tokens, widest = rows + len(own), row_tokens + sum(len(c) for c in own), \
            max(widest, max(len(c) for c in own))
        if prompt not in self.prompts:
            if distinct:
                common = min(common, len(os.path.commonprefix([self.first, prompt])))
                shortest = min(shortest, len(prompt))
            else:
                common = shortest = len(prompt)
            distinct, longest, prompt_tokens = distinct + 1, max(longest, len(prompt)), prompt_tokens + len(prompt)
        return distinct, common, shortest, longest, prompt_tokens, rows, row_tokens, widest

    def _cost(self, distinct, common, shortest, longest, prompt_tokens, rows, row_tokens, widest) -> tuple[int, int]:
        if not self.shared:
            return row_tokens, rows * widest
        # shared_prefix's rules: two prompts at least, each keeps a token, MIN_SHARED_PREFIX or none
        common = min(common, shortest - 1) if distinct > 1 else 0
        common = common if common >= MIN_SHARED_PREFIX else 0
        return (common + prompt_tokens - distinct * common + row_tokens,
                common + distinct * (longest - common) + rows * widest)


def policy_logprobs(model: Any, samples: Sequence[Sample], device, *, with_entropy: bool = False,
                    share: bool | None = None, entropy_grad: bool = False):
    """log pi of what each sample trains, as (logprobs (B, T), mask (B, T), entropy (B, T) or None).

    A free-text sample trains its completion's tokens (``completion_logprobs``). A
    constrained choice trains one value, log pi(answer | one of the legal answers) =
    log pi(answer) - logsumexp over the legal answers of log pi(answer'): the policy
    that was actually sampled from. Its gradient moves the answers' probabilities against
    each other (call vs fold), not the answer against the rest of the vocabulary; its
    entropy is that of the choice. ``entropy_grad``: the entropy keeps its graph (for an
    entropy bonus).
    """
    if not any(s.choice_ids for s in samples):
        return completion_logprobs(model, samples, device, with_entropy=with_entropy, share=share,
                                   entropy_grad=entropy_grad)
    rows, spans = [], []  # one row per completion to score; each sample's span of rows
    for s in samples:
        spans.append((len(rows), len(rows) + len(completions(s))))
        rows += [attrs.evolve(s, completion_ids=c, choice_ids=()) for c in completions(s)]
    logp, mask, entropy = completion_logprobs(model, rows, device, with_entropy=with_entropy, share=share,
                                              entropy_grad=entropy_grad)
    t_max = max(trained_positions(s) for s in samples)
    out_logp, out_mask, out_entropy = [], [], []
    for s, (start, end) in zip(samples, spans):
        if s.choice_ids:
            totals = (logp[start:end] * mask[start:end]).sum(1)  # (k,) log pi of each legal answer
            log_choose = totals - torch.logsumexp(totals, 0)
            row = log_choose[s.choice_ids.index(s.completion_ids)][None]
            lc = log_choose if entropy_grad else log_choose.detach()
            ent = -(lc.exp() * lc).sum()[None]
        else:
            row = logp[start, : len(s.completion_ids)]
            ent = entropy[start, : len(s.completion_ids)] if entropy is not None else row.detach()
        n = row.shape[0]
        out_logp.append(torch.nn.functional.pad(row, (0, t_max - n)))
        out_mask.append(torch.arange(t_max, device=row.device) < n)
        out_entropy.append(torch.nn.functional.pad(ent, (0, t_max - n)))
    return (torch.stack(out_logp), torch.stack(out_mask),
            torch.stack(out_entropy) if with_entropy else None)


def completion_logprobs(model: Any, samples: Sequence[Sample], device, *, with_entropy: bool = False,
                        share: bool | None = None, entropy_grad: bool = False):
    """Teacher-forced log pi(token) of each sample's completion, at the sample's temperature.

    Returns (logprobs (B, T), mask (B, T), entropy (B, T) or None), T = longest completion.

    With ``share`` (default: ``backends.hf.share_prompts``, i.e. on the CPU when it saves a
    quarter of the tokens) samples that share a prompt share its forward pass: each
    distinct prompt runs once (left-padded, explicit position ids) into a KV cache and
    each completion runs against its prompt's cache rows. Gradients flow back through the
    cache into the prompt pass, so values and gradients equal one full pass per sample
    (tested) -- at the cost of the distinct prompts instead of all of them (Kuhn Poker has
    12 information sets; GRPO's n samples of one ask share one prompt). Without, every
    sample runs in full, right-padded, in one pass.
    """
    # identical rows (the same prompt, completion and temperature: every sample of one Kuhn
    # information set scores the same legal answers; GRPO answers that agree) run once, and
    # their values are indexed out; gradients flow back through the index to the one row
    keys = [(s.prompt_ids, s.completion_ids, s.temperature) for s in samples]
    first: dict[tuple, Sample] = {}  # each distinct row's first sample, in order
    for k, s in zip(keys, samples):
        first.setdefault(k, s)
    if len(first) < len(samples):
        row = {k: r for r, k in enumerate(first)}
        logp, mask, entropy = completion_logprobs(model, list(first.values()), device,
                                                  with_entropy=with_entropy, share=share, entropy_grad=entropy_grad)
        index = torch.tensor([row[k] for k in keys], device=logp.device)
        return logp[index], mask[index], entropy[index] if entropy is not None else None
    decoder, head = split_model(model)
    t_max = max(len(s.completion_ids) for s in samples)
    if share is None:
        full, shared = bucket_cost(samples, shared=False)[0], bucket_cost(samples, shared=True)[0]
        share = share_prompts(device, full, shared)
    hidden = (_hidden_shared if share else _hidden_full)(decoder, samples, device, t_max)  # (B, T, H)
    # the LM head and the softmax over the vocabulary run at the completion tokens only, not
    # at the padding of shorter completions (their values are masked anyway): 0 there
    shape = (len(samples), t_max)
    mask = torch.tensor([[t < len(s.completion_ids) for t in range(t_max)] for s in samples], device=device)
    rows = mask.view(-1).nonzero().squeeze(1)  # (N,) positions of completion tokens in (B*T)
    logits = head(hidden.reshape(-1, hidden.shape[-1])[rows]).float()  # (N, V)
    targets = torch.tensor([t for s in samples for t in s.completion_ids], device=device)  # (N,)
    temps = [max(s.temperature, 1e-5) if s.temperature > 0 else 1.0 for s in samples]
    if any(t != 1.0 for t in temps):
        logits = logits / torch.tensor(temps, device=device).repeat_interleave(mask.sum(1))[:, None]
    logp = torch.log_softmax(logits, dim=-1)
    chosen = logp.new_zeros(shape).view(-1).index_put((rows,), logp.gather(1, targets[:, None]).squeeze(1))
    entropy = None
    if with_entropy:  # from the log-softmax already taken (entropy_from_logits would take it again)
        per_token = _entropy(logp if entropy_grad else logp.detach())
        entropy = per_token.new_zeros(shape).view(-1).index_put((rows,), per_token).view(shape)
    return chosen.view(shape), mask, entropy


def _hidden_full(decoder: Any, samples: Sequence[Sample], device, t_max: int) -> torch.Tensor:
    """(B, T, H): the hidden state *before* each completion token (which predicts it), one pass
    over every prompt + completion, right-padded; padded positions repeat the last real one."""
    width = max(s.num_tokens for s in samples)
    ids = torch.zeros((len(samples), width), dtype=torch.long)
    attention = torch.zeros((len(samples), width), dtype=torch.long)
    for b, s in enumerate(samples):
        seq = s.prompt_ids + s.completion_ids
        ids[b, : len(seq)] = torch.tensor(seq)
        attention[b, : len(seq)] = 1
    hidden = decoder(input_ids=ids.to(device), attention_mask=attention.to(device)).last_hidden_state  # (B, L, H)
    cols = torch.tensor([[len(s.prompt_ids) - 1 + min(t, len(s.completion_ids) - 1) for t in range(t_max)]
                         for s in samples], device=device)  # (B, T)
    return hidden[torch.arange(len(samples), device=device)[:, None], cols]


def _hidden_shared(decoder: Any, samples: Sequence[Sample], device, t_max: int) -> torch.Tensor:
    """(B, T, H) as ``_hidden_full``, running each distinct prompt once (their shared
    prefix once for all) into a KV cache and the completions against it."""
    prompts = list(dict.fromkeys(tuple(s.prompt_ids) for s in samples))
    row_of = {p: r for r, p in enumerate(prompts)}
    index = torch.tensor([row_of[tuple(s.prompt_ids)] for s in samples])  # (B,)
    prompt_pass = run_prompts(decoder, prompts, device, use_cache=t_max > 1)
    # the hidden state before completion token k predicts it: the prompt's last for k = 0 ...
    hidden = prompt_pass.last[index.to(device)][:, None]  # (B, 1, H)
    if t_max > 1:  # ... and completion token k - 1's for k >= 1: run completions[:-1] against the cache
        later = run_continuations(decoder, prompt_pass, index, [s.completion_ids[:-1] for s in samples], t_max - 1,
                                  device)  # (B, T-1, H)
        hidden = torch.cat([hidden, later], 1)  # (B, T, H)
    return hidden


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    """-sum p log p over the last axis, from log-probabilities. (N, V) -> (N,)"""
    return -(logp.exp() * logp).sum(dim=-1)


def pad_old_logprobs(samples: Sequence[Sample], t_max: int, device) -> torch.Tensor:
    out = torch.zeros((len(samples), t_max))
    for b, s in enumerate(samples):
        out[b, : len(s.logprobs)] = torch.tensor(s.logprobs)
    return out.to(device)


def recompute_old_logprobs(setting: bool | None, device, autocast_bf16: bool | None = None) -> bool:
    """Take PPO's old logprobs from the learner's own forward pass (True), or use the ones
    recorded at sampling time (False)? ``setting`` None decides by precision: recompute
    where forward passes run under bf16 autocast (``autocast_bf16``; None: on CUDA).

    The learner's pass is epoch 0's, which runs before any update, so it costs no extra
    pass (as TRL's ``per_token_logps.detach()``); later epochs reuse it. With LoRA
    dropout it carries epoch 0's dropout mask.

    Under bf16, generation runs its kernels on other shapes (KV cache, batch padding) than
    the learner, and its logprobs differ from a learner pass by up to ~3e-2, so the PPO
    ratio would not start at 1 and clipping would act on noise. In fp32 they agree to
    ~1e-5 and the extra pass is saved.
    """
    if setting is None:
        return autocast_on(device, autocast_bf16)
    return bool(setting)


def _attention(device, bf16: bool):
    """The SDPA kernel of the learner's passes: on the CPU under bf16, the math one. CPU flash
    attention's backward in bf16 took a quarter of a Kuhn learner step (12 ms a call on
    short prompt-cache shapes); the math kernel made the step 1.25x faster there and ~1.03x
    on ``bench/vs_trl.py``'s task (BENCHMARKS). fp32 and CUDA: torch's choice."""
    if not bf16 or torch.device(device).type != "cpu":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def _keep_input_dtype(model: Any, active: bool):
    """peft's ``disable_input_dtype_casting`` where ``active`` and ``model`` is a peft model."""
    if not active or not hasattr(model, "peft_config"):
        return contextlib.nullcontext()
    from peft.helpers import disable_input_dtype_casting

    return disable_input_dtype_casting(model)


def scheduled(start: float, final: float | None, step: int, steps: int, begin: int = 0) -> float:
    """A linearly scheduled value: ``start`` up to step ``begin``, then linear to ``final`` at
    step ``steps - 1`` (the run's last), constant past it; ``final`` None keeps ``start``."""
    if final is None or step <= begin:
        return start
    if steps - 1 <= begin:
        return final
    return start + (final - start) * min(1.0, (step - begin) / (steps - 1 - begin))


class Learner:
    """PPO-clip on token level, over micro-batches whose gradients sum to the batch loss.

    ``autocast_bf16``: forward passes under bf16 autocast (None: on CUDA; see
    ``backends.hf.autocast``). Old logprobs are recomputed per ``recompute_old_logprobs``.
    ``data_parallel``: a ``rolekit.distributed.learner.DataParallel`` (torchrun): each rank
    trains its shard of the batch and the gradients are summed across ranks before the
    clip and the step, so every rank takes the step one process would take on the batch.
    """

    def __init__(self, model: Any, params: list[torch.nn.Parameter], cfg, *, device, reference=None,
                 autocast_bf16: bool | None = None, data_parallel=None):
        self.model, self.cfg, self.device = model, cfg, device
        self.params = params
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        # reference(): a context manager yielding the reference policy (LoRA: the same model
        # with its adapter disabled, so it costs no second model), or None
        self.reference = reference
        self.autocast_bf16 = autocast_bf16
        self.recompute = recompute_old_logprobs(cfg.recompute_logprobs, device, autocast_bf16)
        self.entropy_coef = cfg.entropy_coef  # this step's (``at_step``: algorithm.entropy_coef_final)
        self.data_parallel = data_parallel
        if data_parallel is not None:
            data_parallel.broadcast_parameters(params)  # every rank starts from rank 0's weights

    def at_step(self, step: int, steps: int) -> None:
        """Set the learning rate and the entropy bonus of step ``step`` (0-based) of a run
        of ``steps``: linear from ``decay_from`` to ``lr_final`` / ``entropy_coef_final``
        where they are set."""
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = scheduled(cfg.lr, cfg.lr_final, step, steps, cfg.decay_from)
        self.entropy_coef = scheduled(cfg.entropy_coef, cfg.entropy_coef_final, step, steps, cfg.decay_from)

    def _forward(self, model: Any, batch: Sequence[Sample], **kw):
        """``policy_logprobs`` of ``batch`` under the learner's autocast (the backward pass
        follows the forward's dtypes by itself).

        Under autocast, peft's LoRA layers keep their bf16 input instead of casting it to
        the fp32 adapter's dtype: autocast runs the adapter's matmuls in bf16 either way (the
        same values), and the cast was a copy of every LoRA layer's input, forward and
        backward (~20 % of a bf16 learner step on the CPU)."""
        on = autocast_on(self.device, self.autocast_bf16)
        with autocast(self.device, self.autocast_bf16), _keep_input_dtype(model, on), _attention(self.device, on):
            return policy_logprobs(model, batch, self.device, **kw)

    def step(self, samples: Sequence[Sample], max_new_tokens: int) -> dict[str, Any]:
        """``ppo_epochs`` optimizer steps over ``samples``; returns learner metrics.

        The ``constant`` aggregation divides each sample by the budget it was generated
        under (``Sample.max_new_tokens``; ``max_new_tokens`` for a sample that has none).
        Non-finite losses skip the update (metrics carry ``nonfinite=True``).
        """
        cfg = self.cfg
        n_seq = len(samples)  # the whole batch's denominators (token_weights), on every rank
        n_tok = sum(trained_positions(s) for s in samples)
        dp = self.data_parallel
        published = samples
        if dp is not None:  # rank 0 hands the batch to the others; each trains its own shard of it
            published = dp.publish(samples, max_new_tokens)
            samples = dp.shard(published)
        # lockstep (FSDP): every rank runs the same passes, one per micro-batch, so no prompt sharing
        lockstep = getattr(dp, "lockstep", False)
        shared_buckets = micro_batches(samples, cfg.micro_batch_tokens, shared=True)
        shared_cost = sum(bucket_cost([samples[i] for i in b])[0] for b in shared_buckets)
        share = share_prompts(self.device, bucket_cost(samples, shared=False)[0] if samples else 0, shared_cost)
        share = share and not lockstep
        buckets = shared_buckets if share else micro_batches(samples, cfg.micro_batch_tokens, shared=False)
        costs = [bucket_cost([samples[i] for i in b], share) for b in buckets]
        computed, padded = sum(c[0] for c in costs), sum(c[1] for c in costs)
        real = sum(s.num_tokens for s in samples)
        filler = 0  # lockstep: micro-batches added so every rank runs as many (the last ones; their loss weighs 0)
        if lockstep:
            samples, buckets, filler = dp.pad(published, samples, buckets)
        # recompute: the old logprobs are epoch 0's own forward pass (detached), which runs
        # before any update, so it is the pass a separate recompute would make; kept for later epochs
        old: dict[int, torch.Tensor] = {}
        ref = self._reference_logprobs(samples, buckets, share) if cfg.kl_beta > 0 else {}
        per_key: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        totals = defaultdict(float)
        nonfinite = False
        self.model.train()
        for epoch in range(cfg.ppo_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            epoch_loss = 0.0
            for k, bucket in enumerate(buckets):
                batch = [samples[i] for i in bucket]
                padding = k >= len(buckets) - filler
                bonus = self.entropy_coef > 0
                logp, mask, entropy = self._forward(self.model, batch, with_entropy=epoch == 0 or bonus, share=share,
                                                    entropy_grad=bonus)
                t_max = logp.shape[1]
                if self.recompute and epoch == 0:
                    old_lp = logp.detach()
                    if cfg.ppo_epochs > 1:
                        old.update({i: old_lp[j, : trained_positions(samples[i])] for j, i in enumerate(bucket)})
                elif self.recompute:
                    old_lp = torch.stack([torch.nn.functional.pad(old[i], (0, t_max - old[i].numel())) for i in bucket])
                else:
                    old_lp = pad_old_logprobs(batch, t_max, self.device)
                adv = torch.tensor([s.advantage for s in batch], device=self.device)
                loss_tok, clipped = ppo_clip(logp, old_lp, adv, cfg.clip_eps)  # (B, T)
                kl_tok = None
                if cfg.kl_beta > 0:
                    ref_lp = torch.stack([torch.nn.functional.pad(ref[i], (0, t_max - ref[i].numel())) for i in bucket])
                    kl_tok = kl_estimate(logp, ref_lp, cfg.kl_estimator)
                    loss_tok = loss_tok + cfg.kl_beta * kl_tok
                if bonus:  # maximise the policy's entropy: keeps a choice from saturating before it is learned
                    loss_tok = loss_tok - self.entropy_coef * entropy
                budgets = torch.tensor([[float(s.max_new_tokens or max_new_tokens)] for s in batch],
                                       device=self.device)  # (B, 1)
                weights = token_weights(mask, cfg.aggregation, num_sequences=n_seq, num_tokens=n_tok,
                                        max_new_tokens=budgets)
                loss = (weights * loss_tok).sum() * (0.0 if padding else 1.0)
                if not torch.isfinite(loss):
                    nonfinite = True
                    if not lockstep:  # lockstep: the other ranks' passes wait for this one's
                        break
                loss.backward()
                epoch_loss += loss.item()
                if epoch == 0 and not padding:
                    self._accumulate(per_key, batch, mask, loss_tok, weights, clipped, logp, old_lp, kl_tok,
                                     entropy.detach() if entropy is not None else None)
            if dp is not None:  # sum the ranks' gradients (and losses); skip the step if any rank saw a nan
                nonfinite, epoch_loss = dp.all_reduce_gradients(self.params, nonfinite, epoch_loss)
            if nonfinite:
                self.optimizer.zero_grad(set_to_none=True)
                break
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm).item()
            if not math.isfinite(grad_norm):
                nonfinite = True
                self.optimizer.zero_grad(set_to_none=True)
                break
            self.optimizer.step()
            totals["loss"] += epoch_loss / cfg.ppo_epochs
            totals["grad_norm"] = grad_norm
        self.model.eval()
        if dp is not None:  # the figures of the whole batch, not of this rank's shard
            per_key, (real, computed, padded) = dp.sum_metrics(per_key, (real, computed, padded))
        metrics: dict[str, Any] = {
            "loss": totals["loss"], "grad_norm": totals["grad_norm"], "nonfinite": nonfinite,
            "lr": self.optimizer.param_groups[0]["lr"], "entropy_coef": self.entropy_coef,
            "micro_batches": len(buckets) - filler, "padding_fraction": 1.0 - computed / padded if padded else 0.0,
            "trained_tokens": real * cfg.ppo_epochs,  # prompt + completion tokens of the samples
            "computed_tokens": computed * cfg.ppo_epochs,  # what the forward passes ran (shared prompts once)
        }
        metrics["by_role"] = {key: self._finish(stats) for key, stats in per_key.items()}
        return metrics

    @staticmethod
    def _accumulate(per_key, batch, mask, loss_tok, weights, clipped, logp, old_lp, kl_tok, entropy):
        m = mask.float()
        with torch.no_grad():
            sums = {  # per-sample sums over tokens, (B,) each
                "tokens": m.sum(1), "loss": (weights * loss_tok).sum(1), "clipped": (clipped.float() * m).sum(1),
                "approx_kl_old": ((old_lp - logp) * m).sum(1),
            }
            if kl_tok is not None:
                sums["kl"] = (kl_tok * m).sum(1)
            if entropy is not None:
                sums["entropy"] = (entropy * m).sum(1)
            rows = torch.stack(list(sums.values()), 1).tolist()  # one device->host copy, not 5 per sample
            for s, row in zip(batch, rows):
                st = per_key[f"{s.game}/{s.role}"]
                for name, x in zip(sums, row):
                    st[name] += x

    @staticmethod
    def _finish(stats) -> dict[str, float]:
        n = max(stats["tokens"], 1.0)
        return {"pg_loss": stats["loss"], "clip_fraction": stats["clipped"] / n, "kl": stats["kl"] / n,
                "entropy": stats["entropy"] / n, "approx_kl_old": stats["approx_kl_old"] / n}

    @torch.no_grad()
    def _recompute(self, samples, buckets, model=None, *, share: bool | None = None) -> dict[int, torch.Tensor]:
        out = {}
        for bucket in buckets:
            batch = [samples[i] for i in bucket]
            logp, mask, _ = self._forward(model or self.model, batch, share=share)
            for j, i in enumerate(bucket):
                out[i] = logp[j, : trained_positions(samples[i])]
        return out

    @torch.no_grad()
    def _reference_logprobs(self, samples, buckets, share: bool | None = None) -> dict[int, torch.Tensor]:
        if self.reference is None:
            raise ValueError("kl_beta > 0 needs a reference policy")
        with self.reference() as reference_model:
            return self._recompute(samples, buckets, reference_model, share=share)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)
