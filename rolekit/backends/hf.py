"""The ``hf`` backend: generation with a transformers model's KV cache (CPU or CUDA).

Requests are grouped by sampling parameters, sorted, cut into batches, and generated in
one of two ways (``share_prefill``, chosen by :func:`share_prefill` unless set):

* shared (``HFBackend._decode_batch``, the default on the CPU): a decode loop of rolekit's
  own runs each distinct prompt of a batch once and the batch's common header once
  (:func:`run_prompts`, as scoring and the learner do), repeats the KV cache rows for the
  requests that share a prompt (GRPO's n answers), and drops a row from the batch when it
  stops. Requests are sorted by prompt tokens, so those sharing a prompt or a header meet.
* ``generate`` (``HFBackend._generate_batch``): transformers' ``generate`` on left-padded
  batches sorted by prompt length (so a batch wastes little padding); every request's
  prompt runs in full, and a stopped row decodes padding until the batch ends.

Both choose tokens the same way from the same logits: the same tokens under greedy
decoding and seeded sampling, the same draws from the global RNG until a row stops
(tests/test_backend_hf_shared.py). Sampling
draws from the global torch RNG, so ``torch.manual_seed`` makes a run reproducible
(for the same requests in the same order and batch limits). A request with a ``seed``
samples from its own generator instead (:class:`SeededSampler`): its tokens then do not
depend on the batch or the process it runs in (``rollout.seeded_sampling``; Ray workers).

Logprobs: ``log_softmax(raw_logits / T)`` at the produced token, T = 1 for greedy.
They are taken *before* top-p/top-k truncation, i.e. they are the logprobs of the
full tempered distribution, which is what the learner recomputes from a forward pass
(so the PPO ratio starts at 1). With top-p/top-k < full they differ from the truncated
distribution actually sampled from; that is the usual (SPIRAL, TRL) convention.
Constrained choices follow it too (``table.ModelResponder._choose``; top-k/top-p cut the
choice distribution as :func:`truncated` does).

Precision: on CUDA, generation and scoring run under bf16 autocast (:func:`autocast`), so
a model whose weights are fp32 (full fine-tuning keeps an fp32 master copy:
``models.training_dtype``) still runs its matmuls in bf16. On the CPU everything is fp32.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from rolekit.backends.lora import LeanLoRA
from rolekit.chat import ChatTokenizer
from rolekit.types import Generation, GenerationRequest

# Explicit neutral values for every logits processor transformers would otherwise fill in
# from the model's own generation_config (transformers 5 fills unset fields from it):
# anything that reshapes the logits would make the returned logprobs disagree with
# what the learner recomputes.
_NEUTRAL = dict(
    num_beams=1,
    num_return_sequences=1,
    repetition_penalty=1.0,
    encoder_repetition_penalty=1.0,
    no_repeat_ngram_size=0,
    min_new_tokens=0,  # takes precedence over min_length
    typical_p=1.0,
    epsilon_cutoff=0.0,
    eta_cutoff=0.0,
    guidance_scale=1.0,
    renormalize_logits=False,
    remove_invalid_values=False,
)


def _neutral_overrides(model: Any, *, sampling: bool) -> dict[str, Any]:
    """The knobs of ``_NEUTRAL`` (and ``min_p`` when sampling) that the model's own
    generation_config sets to something else; only those are passed.

    A knob passed at its neutral value is not free: ``min_p=0.0`` still installs a
    MinPLogitsWarper (a softmax over the vocabulary for every token) and
    ``min_new_tokens=0`` a MinLengthLogitsProcessor -- 15 % of ``generate`` on a small
    model. Left unset, a knob the model does not set falls back to transformers' neutral
    global default.
    """
    own = getattr(model, "generation_config", None)
    neutral = {**_NEUTRAL, "min_p": 0.0} if sampling else dict(_NEUTRAL)
    out = {k: v for k, v in neutral.items() if getattr(own, k, None) not in (None, v)}
    if getattr(own, "min_length", None):  # min_new_tokens overrides a model's min_length
        out["min_new_tokens"] = 0
    return out


def mixed_precision(device: Any) -> bool:
    """Run forward passes on ``device`` under bf16 autocast by default?

    On CUDA yes: the weights may be fp32 (an fp32 master copy for full fine-tuning), and
    autocast runs the matmuls in bf16 at bf16 speed while AdamW updates fp32 weights. On
    the CPU no: bf16 matmuls are slow there without AVX-512, and fp32 is exact.
    """
    return torch.device(device).type == "cuda"


def autocast_on(device: Any, enabled: bool | None = None) -> bool:
    """Does :func:`autocast` switch bf16 autocast on for ``device``? ``enabled`` None is
    :func:`mixed_precision`'s default (CUDA only)."""
    return mixed_precision(device) if enabled is None else bool(enabled)


def autocast(device: Any, enabled: bool | None = None) -> contextlib.AbstractContextManager:
    """A context running forward passes on ``device`` under bf16 autocast, the weights left
    in their own dtype. ``enabled``: None is :func:`mixed_precision`'s default (CUDA only);
    True also works on the CPU (tests); off, a no-op."""
    device = torch.device(device)
    if not autocast_on(device, enabled):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def truncated(probs: torch.Tensor, *, top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """``probs`` (K,) cut to its ``top_k`` likeliest entries (0: all), then to the smallest
    set of those whose probability, renormalised over the top-k, reaches ``top_p``; the
    result renormalised. The order of transformers' TopK and TopP warpers in ``generate``;
    the likeliest entry always stays. Constrained choices sample from this (K = the legal
    answers)."""
    order = torch.argsort(probs, descending=True, stable=True)
    keep = len(probs) if top_k <= 0 else min(top_k, len(probs))
    if top_p < 1.0:
        top = probs[order[:keep]]
        reached = torch.cumsum(top / top.sum(), 0) >= top_p  # (keep,) first True: the set is complete
        keep = int(torch.nonzero(reached)[0]) + 1 if reached.any() else keep
    out = torch.zeros_like(probs)
    out[order[:keep]] = probs[order[:keep]]
    return out / out.sum()


def cache_kwarg() -> str:
    """The forward() keyword for a KV cache: ``cache`` since transformers 5.x, ``past_key_values`` before."""
    import inspect

    from transformers import LlamaForCausalLM

    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


CACHE_KWARG = cache_kwarg()


def share_prompts(device: Any, full_tokens: int, shared_tokens: int) -> bool:
    """Run each distinct prompt once and the completions against its KV cache (two passes),
    or every (prompt, completion) in full (one pass)?

    Measured (BENCHMARKS.md, bench/choose.py and bench/learner.py): on 2 CPU cores, where a
    forward pass is compute-bound, sharing pays in proportion to the tokens it saves (Kuhn
    choices 4x, TicTacToe 7.5x); on an H200 these batches are latency-bound and the second
    pass costs more than the saved tokens (Kuhn choices 0.5x). So: share on the CPU when
    it saves at least a quarter of the tokens.
    """
    return torch.device(device).type == "cpu" and shared_tokens <= 0.75 * full_tokens


def share_prefill(device: Any) -> bool:
    """Generate with prompts shared (``HFBackend._decode_batch``: each distinct prompt and a
    batch's header prefilled once, stopped rows dropped) rather than transformers' ``generate``?

    Measured on 2 CPU cores (BENCHMARKS.md, issue #18): free-text self-play 1.45-1.74x
    (bench/rollout.py --no-replay --seeded, the three SPIRAL games), one GRPO step's 16
    answers 1.6x (bench/vs_trl.py --split), so yes on the CPU. On a GPU not measured (none was
    lent): ``generate`` stays, as ``share_prompts`` found that extra passes cost more than the
    tokens they save on an H200.
    """
    return torch.device(device).type == "cpu"


MIN_SHARED_PREFIX = 16  # tokens: a shorter common prefix is not worth its own pass


def shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``prompts`` share (each keeps at least one of its own),
    or 0 when that is under ``MIN_SHARED_PREFIX`` or there is only one prompt.

    A game's prompts start with the same chat header and rules (TicTacToe: ~110 of ~230
    tokens), so a batch computes them once instead of once per prompt.
    """
    if len(prompts) < 2:
        return 0
    common = len(os.path.commonprefix([tuple(p) for p in prompts]))  # of the min and max: of all
    common = min(common, min(len(p) for p in prompts) - 1)
    return common if common >= MIN_SHARED_PREFIX else 0


def split_model(model: Any) -> tuple[Any, Any]:
    """(decoder returning hidden states, lm_head) of a causal LM, peft-wrapped or not.

    Callers apply the LM head only where they need logits: the full (B, L, V) logits of
    a 49k-token vocabulary would dominate memory.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


class PromptPass(NamedTuple):
    """Distinct prompts run once (``run_prompts``), ready for continuations against their cache."""

    last: torch.Tensor  # (P, H) hidden state at each prompt's last token (it predicts the next)
    cache: Any  # KV cache with one row per prompt, or None
    mask: torch.Tensor  # (P, W) which cache columns hold real tokens (CPU)
    lengths: torch.Tensor  # (P,) tokens in each prompt: the position of the next one (CPU)


def run_prompts(decoder: Any, prompts: Sequence[Sequence[int]], device: Any, *, use_cache: bool,
                pad_id: int = 0) -> PromptPass:
    """One forward pass over distinct ``prompts`` (with explicit position ids, so padding
    changes nothing). Their ``shared_prefix`` runs once, as a single row whose KV cache is
    broadcast to every prompt, and only the rest of each prompt (right-padded) runs per
    prompt; without one, the prompts run left-padded. Gradients flow back through the
    cache into the prefix: the same values and gradients as one pass per prompt (tested).
    """
    common = shared_prefix(prompts)
    lengths = torch.tensor([len(p) for p in prompts])
    if not common:
        ids, mask, positions = left_padded(prompts, pad_id)
        out = decoder(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                      use_cache=use_cache)
        return PromptPass(out.last_hidden_state[:, -1], _cache(out) if use_cache else None, mask, lengths)
    prefix = decoder(input_ids=torch.tensor([list(prompts[0][:common])], device=device), use_cache=True)
    cache = _cache(prefix)
    cache.reorder_cache(torch.zeros(len(prompts), dtype=torch.long, device=device))  # (1, c) -> (P, c)
    rest, rest_mask = right_padded([p[common:] for p in prompts], int(lengths.max()) - common, pad_id)  # (P, S)
    mask = torch.cat([torch.ones((len(prompts), common), dtype=torch.long), rest_mask], 1)
    positions = common + torch.arange(rest.shape[1])[None].expand(len(prompts), -1)
    out = decoder(input_ids=rest.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                  use_cache=True, **{CACHE_KWARG: cache})
    last = out.last_hidden_state[torch.arange(len(prompts), device=device), (rest_mask.sum(-1) - 1).to(device)]
    return PromptPass(last, _cache(out) if use_cache else None, mask, lengths)


def run_continuations(decoder: Any, prompts: PromptPass, index: torch.Tensor, continuations: Sequence[Sequence[int]],
                      width: int, device: Any, pad_id: int = 0) -> torch.Tensor:
    """(N, ``width``, H) hidden states of each continuation, right-padded, run against the
    cache row ``index[n]`` of ``prompts`` (which this reorders in place: use it once)."""
    prompts.cache.reorder_cache(index.to(device))  # one cache row per continuation
    ids, mask = right_padded(continuations, width, pad_id)  # (N, width)
    positions = prompts.lengths[index][:, None] + torch.arange(width)[None, :]
    attention = torch.cat([prompts.mask[index], mask], 1)
    return decoder(input_ids=ids.to(device), attention_mask=attention.to(device), position_ids=positions.to(device),
                   use_cache=True, **{CACHE_KWARG: prompts.cache}).last_hidden_state


def _cache(output: Any) -> Any:
    return getattr(output, "cache", None) or output.past_key_values


@torch.inference_mode()
def teacher_forced(model: Any, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *, pad_id: int = 0,
                   temperature: float = 1.0, batch_size: int = 8, stop_ids: Sequence[int] = (),
                   share: bool | None = None, autocast_bf16: bool | None = None) -> list[tuple[float, ...]]:
    """Per-token log pi(completion token | prompt, earlier ones) for each (prompt, completion) pair.

    With ``stop_ids`` one more value ends each tuple: log p(any of ``stop_ids``) right after
    the completion (the answer must end there). Softmax of logits / ``temperature`` in fp32;
    the forward passes under bf16 autocast where ``autocast_bf16`` (None: on CUDA, :func:`autocast`).

    With ``share`` (default: ``share_prompts``) pairs that share a prompt share its forward
    pass: each distinct prompt runs once (``batch_size`` prompts at a time, sorted so that a
    batch shares its header, whose tokens run once: ``run_prompts``) and fills a KV cache;
    then every completion of those prompts runs against its prompt's cache rows -- scoring
    k legal answers of one decision costs one prompt pass plus k short ones. Without, each
    pair runs in full, ``batch_size`` pairs at a time.
    """
    device = next(model.parameters()).device
    if any(len(p) == 0 for p, _ in pairs):
        raise ValueError("a prompt needs at least one token")
    prompts = list(dict.fromkeys(tuple(p) for p, _ in pairs))  # distinct, in first-seen order
    if share is None:
        completion_tokens = sum(len(c) for _, c in pairs)
        share = share_prompts(device, sum(len(p) for p, _ in pairs) + completion_tokens,
                              sum(len(p) for p in prompts) + completion_tokens)
    kw = dict(pad_id=pad_id, temperature=temperature, stop_ids=stop_ids, device=device)
    out: list[tuple[float, ...] | None] = [None] * len(pairs)
    was_training = model.training
    model.eval()
    try:
        with autocast(device, autocast_bf16):
            _teacher_forced(model, pairs, prompts, out, share=share, batch_size=batch_size, **kw)
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def _teacher_forced(model: Any, pairs, prompts: list[tuple[int, ...]], out: list, *, share: bool, batch_size: int,
                    **kw) -> None:
    """``teacher_forced``'s passes: fill ``out`` (one tuple per pair), sharing prompts or in full."""
    if not share:
        for start in range(0, len(pairs), batch_size):
            items = [(r, c) for r, (_, c) in enumerate(pairs[start:start + batch_size])]
            own = [tuple(p) for p, _ in pairs[start:start + batch_size]]
            out[start:start + len(items)] = _score_group(model, own, items, single_pass=True, **kw)
        return
    prompts.sort()  # in token order: a batch of neighbours shares its header (see shared_prefix)
    by_prompt: dict[tuple[int, ...], list[int]] = {p: [] for p in prompts}
    for i, (p, _) in enumerate(pairs):
        by_prompt[tuple(p)].append(i)
    for start in range(0, len(prompts), batch_size):
        group = prompts[start:start + batch_size]
        rows = [(g, i) for g, p in enumerate(group) for i in by_prompt[p]]  # (prompt row, pair index)
        for (g, i), values in zip(rows, _score_group(model, group, [(g, pairs[i][1]) for g, i in rows], **kw)):
            out[i] = values


def left_padded(seqs: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, position ids), each (B, W), of left-padded sequences."""
    width = max(len(q) for q in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, q in enumerate(seqs):
        ids[row, width - len(q):] = torch.tensor(list(q), dtype=torch.long)
        mask[row, width - len(q):] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def right_padded(seqs: Sequence[Sequence[int]], width: int, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), each (B, ``width``), of right-padded sequences (continuations
    run against a KV cache: their positions are given separately)."""
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, q in enumerate(seqs):
        ids[row, :len(q)] = torch.tensor(list(q), dtype=torch.long)
        mask[row, :len(q)] = 1
    return ids, mask


def _score_group(model: Any, prompts: Sequence[tuple[int, ...]], items: Sequence[tuple[int, Sequence[int]]], *,
                 pad_id: int, temperature: float, stop_ids: Sequence[int], device: Any,
                 single_pass: bool = False) -> list[tuple[float, ...]]:
    """Score ``items`` = (prompt row, completion) against one batch of ``prompts``.

    Shared: the prompts run once into a KV cache, the completions against their rows.
    ``single_pass``: item i's prompt is ``prompts[i]`` and prompt + completion run together.
    """
    longest = max(len(c) for _, c in items)
    if single_pass:
        keep = longest + 1  # positions predicting a completion token or the stop
        ids, mask, positions = left_padded([tuple(prompts[g]) + tuple(c) for g, c in items], pad_id)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                       logits_to_keep=keep).logits[:, -keep:]  # (N, keep, V)
        rows = [logits[row, keep - len(c) - 1:] for row, (_, c) in enumerate(items)]
    else:
        decoder, head = split_model(model)
        prompt_pass = run_prompts(decoder, prompts, device, use_cache=longest > 0, pad_id=pad_id)
        first_logits = head(prompt_pass.last)  # (P, V): predicts each completion's first token
        later = None  # (N, C, V): position j predicts completion token j + 1 (and the stop after the last)
        if longest > 0:
            later = _continuation_logits(decoder, head, prompt_pass, items, longest, device, pad_id)
        rows = [first_logits[g:g + 1] if later is None else torch.cat([first_logits[g:g + 1], later[row, :len(c)]])
                for row, (g, c) in enumerate(items)]
    out = []
    scale = max(temperature, 1e-5)
    for logits, (_, completion) in zip(rows, items):  # logits (c + 1, V)
        c = len(completion)
        logp = torch.log_softmax(logits.float() / scale, dim=-1)
        target = torch.tensor(list(completion), dtype=torch.long, device=logp.device)
        values = logp[torch.arange(c, device=logp.device), target].tolist()
        if stop_ids:
            values.append(torch.logsumexp(logp[c, list(stop_ids)], dim=-1).item())
        out.append(tuple(values))
    return out


CONTINUATION_CACHE_TOKENS = 16384  # cached prompt tokens copied for one pass of continuations (fp32 SmolLM2: ~0.75 GB)


def _continuation_logits(decoder: Any, head: Any, prompt_pass: PromptPass, items, longest: int, device: Any,
                         pad_id: int) -> torch.Tensor:
    """(N, ``longest``, V) logits of each item's continuation against its prompt's cache row.

    Each continuation runs on its own copy of its prompt's cache row, so k answers scored
    for one long prompt copy it k times: `rolekit eval` on negotiation (22 legal answers
    after ~650-token prompts, 16+ prompts a batch) grew to 12 GB. Here the items run in
    chunks whose copied rows hold at most ``CONTINUATION_CACHE_TOKENS`` tokens (8 such
    prompts: 7.0 -> 2.4 GB peak, a little faster); the values are the same as in one pass
    (tested).
    """
    index = torch.tensor([g for g, _ in items], dtype=torch.long)
    layers = getattr(prompt_pass.cache, "layers", None)
    per_row = prompt_pass.mask.shape[1]
    chunk = max(1, CONTINUATION_CACHE_TOKENS // max(1, per_row))
    if len(items) <= chunk or not layers or not all(hasattr(layer, "keys") for layer in layers):
        return head(run_continuations(decoder, prompt_pass, index, [c for _, c in items], longest, device, pad_id))
    saved = [(layer.keys, layer.values) for layer in layers]
    out = []
    try:
        for start in range(0, len(items), chunk):
            rows = index[start:start + chunk]
            for layer, (keys, values) in zip(layers, saved):  # this chunk's rows, fresh (the pass appends to them)
                layer.keys, layer.values = keys, values
            out.append(head(run_continuations(decoder, prompt_pass, rows, [c for _, c in items[start:start + chunk]],
                                              longest, device, pad_id)))
    finally:
        for layer, (keys, values) in zip(layers, saved):
            layer.keys, layer.values = keys, values
    return torch.cat(out)


class SeededSampler:
    """A logits processor that samples every row of a batch from its own seed.

    Row b's token t is the Gumbel-max draw argmax(logits / T + g), g ~ Gumbel(0, 1) from a
    generator seeded with ``seeds[b]`` -- an exact sample of softmax(logits / T) after the
    top-k and top-p cuts (those of transformers' TopK and TopP warpers, in that order). It
    returns 0 at the drawn token and -inf elsewhere, so greedy ``generate`` takes it.

    Why: ``generate``'s own sampling draws from the global torch RNG, so a request's tokens
    depend on every other row of its batch. Here they depend only on its seed: the same
    episode samples the same tokens alone, in any batch, or on another Ray worker
    (``rolekit.distributed``). Gumbel-max over the full vocabulary also makes the draw
    insensitive to the ~1e-6 float noise a different batch shape puts on the logits (an
    inverse-CDF draw over 49k near-equal probabilities would flip on it).
    """

    def __init__(self, seeds: Sequence[int], *, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(scores, -math.inf)
        return out.scatter_(1, self.draw(scores)[:, None], 0.0)

    def draw(self, scores: torch.Tensor) -> torch.Tensor:
        """(B,) the token each row draws from its (B, V) ``scores`` (raw logits)."""
        logits = scores.double() / self.temperature  # (B, V)
        if self.top_k > 0 and self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]  # (B, 1)
            logits = logits.masked_fill(logits < kth, -math.inf)
        if self.top_p < 1.0:
            ascending, order = torch.sort(logits, dim=-1)
            cut = ascending.softmax(-1).cumsum(-1) <= 1 - self.top_p
            cut[:, -1] = False  # the likeliest token always stays
            logits = logits.masked_fill(torch.zeros_like(cut).scatter(1, order, cut), -math.inf)  # back to vocab order
        uniform = torch.stack([torch.rand(logits.shape[-1], generator=g, dtype=torch.float64)
                               for g in self.generators]).to(logits.device)  # (B, V)
        return torch.argmax(logits - torch.log(-torch.log(uniform)), dim=-1)  # (B,)


class HFBackend:
    """Generates with a transformers (or peft) causal LM on its own device.

    ``tokenizer`` is a Hugging Face tokenizer or a :class:`ChatTokenizer`; it supplies
    the end-of-turn ids (generation stops at any of them) and the pad id.
    ``max_batch_size`` caps sequences per generation batch and
    ``max_batch_tokens`` (optional) caps batch size × (longest prompt + max_new_tokens).
    ``share_prefill``: generate with prompts shared (True), with transformers' ``generate``
    (False), or as :func:`share_prefill` decides for the device (None; see the module doc).
    ``calls`` counts generation batches and ``tokens_generated`` the tokens
    returned. ``autocast_bf16``: generate and score under bf16 autocast (None: on CUDA,
    where the trained model may hold fp32 master weights; see :func:`autocast`).
    ``lean_lora``: run a peft LoRA model through its exact lean view (:meth:`inference_model`).
    """

    name = "hf"

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int = 32, max_batch_tokens: int | None = None,
                 autocast_bf16: bool | None = None, share_prefill: bool | None = None, lean_lora: bool = True):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.model = model
        self.lean_lora = lean_lora
        self._lean = LeanLoRA(model)
        self.share_prefill = share_prefill
        self.autocast_bf16 = autocast_bf16
        self.chat = tokenizer if isinstance(tokenizer, ChatTokenizer) else ChatTokenizer(tokenizer)
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.calls = 0
        self.tokens_generated = 0
        self.version = 0  # bumped by every sync

    def sync(self, model: Any = None) -> None:
        """Point at new weights. The learner trains the same torch module, so usually
        there is nothing to copy; a different module replaces the current one."""
        if model is not None:
            self.model = model
            self._lean = LeanLoRA(model)
        self.version += 1

    def inference_model(self) -> Any:
        """The module that generation and scoring run: a LoRA model's exact lean view
        (:class:`rolekit.backends.lora.LeanLoRA`, the same weights without peft's per-call
        overhead) unless ``lean_lora`` is off, else the model itself."""
        if not self.lean_lora:
            return self.model
        on = autocast_on(next(self.model.parameters()).device, self.autocast_bf16)
        return self._lean.model(torch.bfloat16 if on else None)

    # ------------------------------------------------------------------ batching

    def _batches(self, requests: Sequence[GenerationRequest], by_tokens: bool = False) -> list[list[int]]:
        """Indices of ``requests``, grouped by sampling parameters, sorted by prompt
        length (``by_tokens``: by prompt tokens, so that requests sharing a prompt or a
        header land in one batch), and cut to the batch limits."""
        key = lambda i: (requests[i].temperature, requests[i].top_p, requests[i].top_k,  # noqa: E731
                         tuple(sorted(requests[i].stop_ids)), requests[i].seed is not None)
        order = sorted(range(len(requests)), key=lambda i: (key(i), tuple(requests[i].prompt_ids) if by_tokens
                                                            else len(requests[i].prompt_ids)))
        batches: list[list[int]] = []
        for _, group in itertools.groupby(order, key=key):
            batch: list[int] = []
            for i in group:
                candidate = batch + [i]
                width = max(len(requests[j].prompt_ids) + requests[j].max_new_tokens for j in candidate)
                too_many = len(candidate) > self.max_batch_size
                too_big = self.max_batch_tokens is not None and len(candidate) * width > self.max_batch_tokens
                if batch and (too_many or too_big):
                    batches.append(batch)
                    batch = [i]
                else:
                    batch = candidate
            if batch:
                batches.append(batch)
        if by_tokens:  # rows in the order of the other sort: a batch draws from the global RNG as generate's would
            batches = [sorted(b, key=lambda i: (len(requests[i].prompt_ids), i)) for b in batches]
        return batches

    # ------------------------------------------------------------------ generation

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        results: list[Generation | None] = [None] * len(requests)
        todo = []
        for i, request in enumerate(requests):
            if request.max_new_tokens <= 0:
                results[i] = Generation(completion_ids=(), logprobs=(), finish_reason="length")
            else:
                todo.append(i)
        live = [requests[i] for i in todo]
        share = self.share_prefill
        if share is None:
            share = share_prefill(next(self.model.parameters()).device)
        run = self._decode_batch if share else self._generate_batch
        for batch in self._batches(live, by_tokens=share):
            for j, generation in zip(batch, run([live[j] for j in batch])):
                results[todo[j]] = generation
        return results  # type: ignore[return-value]

    def score(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *, temperature: float = 1.0,
              batch_size: int | None = None) -> list[tuple[float, ...]]:
        """Per-token log pi(completion | prompt) at ``temperature``, by teacher forcing."""
        self.calls += 1
        return teacher_forced(self.inference_model(), pairs, pad_id=self.chat.pad_id, temperature=temperature,
                              batch_size=batch_size or self.max_batch_size, autocast_bf16=self.autocast_bf16)

    @torch.inference_mode()
    def _generate_batch(self, batch: Sequence[GenerationRequest]) -> list[Generation]:
        from transformers import GenerationConfig

        model = self.inference_model()
        device = next(model.parameters()).device
        first = batch[0]
        greedy = first.temperature <= 0
        temperature = 1.0 if greedy else float(first.temperature)

        input_ids, attention_mask, _ = left_padded([r.prompt_ids for r in batch], self.chat.pad_id)  # (B, P)
        width = input_ids.shape[1]

        max_new_tokens = max(r.max_new_tokens for r in batch)
        # Sampling knobs are passed explicitly, do_sample too: transformers 5 fills unset ones
        # from the model's generation_config and then from global defaults (top_k=50!).
        # (4.50-4.57 even replaced knobs passed at the library default, temperature 1.0 or
        # top_p 1.0: pyproject excludes them, and load_model neutralises generation configs.)
        sampling = {} if greedy else dict(temperature=temperature, top_p=float(first.top_p), top_k=int(first.top_k))
        # Seeded requests sample in a logits processor, each row from its own generator; generate
        # then only takes the argmax of what it leaves (see SeededSampler).
        seeded = not greedy and first.seed is not None
        processors = [SeededSampler([r.seed for r in batch], **sampling)] if seeded else None
        if seeded:
            sampling = {}
        config = GenerationConfig(
            **_neutral_overrides(model, sampling=not greedy and not seeded),
            **sampling,
            do_sample=not greedy and not seeded,
            max_new_tokens=max_new_tokens,
            eos_token_id=sorted(self.chat.eos_ids | first.stop_ids),
            pad_token_id=self.chat.pad_id,
            use_cache=True,
            return_dict_in_generate=True,
            output_logits=True,
        )
        was_training = model.training
        model.eval()
        try:
            with autocast(device, self.autocast_bf16):
                out = model.generate(
                    input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=config,
                    logits_processor=processors,
                )
        finally:
            model.train(was_training)
        self.calls += 1

        # Logprobs of the produced tokens under the tempered, untruncated distribution.
        new_ids = out.sequences[:, width:]  # (B, S)
        steps = new_ids.shape[1]
        logprobs = torch.empty((len(batch), steps), dtype=torch.float32, device=new_ids.device)  # (B, S)
        for t, logits in enumerate(out.logits):  # S tensors of (B, V)
            logp = torch.log_softmax(logits.float() / temperature, dim=-1)
            logprobs[:, t] = logp.gather(-1, new_ids[:, t : t + 1]).squeeze(-1)
        new_ids, logprobs = new_ids.tolist(), logprobs.tolist()

        generations = []
        for row, request in enumerate(batch):
            ids = new_ids[row][: request.max_new_tokens]
            finish = "length"
            for k, token in enumerate(ids):
                if token in self.chat.eos_ids or token in request.stop_ids:
                    ids, finish = ids[: k + 1], "stop"
                    break
            self.tokens_generated += len(ids)
            generations.append(Generation(completion_ids=ids, logprobs=logprobs[row][: len(ids)], finish_reason=finish))
        return generations

    @torch.inference_mode()
    def _decode_batch(self, batch: Sequence[GenerationRequest]) -> list[Generation]:
        """``_generate_batch``'s result by a decode loop of its own that shares prompts.

        Each distinct prompt of the batch runs once, and the batch's common header once
        (:func:`run_prompts`, as scoring and the learner run them); the KV cache rows are then
        repeated for the requests that share a prompt (GRPO's n answers to one ask) and decoding
        goes on one token per row per step. A row that stops (an end-of-turn or stop id, or its
        own ``max_new_tokens``) leaves the batch and its cache row is dropped.

        Tokens are chosen as ``generate`` chooses them: argmax (greedy), :class:`SeededSampler`
        (seeded requests: the same tokens as ``generate``), or transformers' temperature, top-k
        and top-p warpers then ``torch.multinomial`` over the rows still running (the same
        distribution; the same draws as ``generate`` until a row stops). Logprobs as there.
        """
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        model = self.inference_model()
        device = next(model.parameters()).device
        first = batch[0]
        greedy = first.temperature <= 0
        temperature = 1.0 if greedy else float(first.temperature)
        seeded = not greedy and first.seed is not None
        sampler = SeededSampler([r.seed for r in batch], temperature=temperature, top_p=float(first.top_p),
                                top_k=int(first.top_k)) if seeded else None
        warpers = LogitsProcessorList()
        if not greedy and not seeded:
            if temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(temperature))
            if first.top_k:
                warpers.append(TopKLogitsWarper(top_k=int(first.top_k)))
            if first.top_p < 1.0:
                warpers.append(TopPLogitsWarper(top_p=float(first.top_p)))
        stops = [self.chat.eos_ids | r.stop_ids for r in batch]
        prompts = list(dict.fromkeys(tuple(r.prompt_ids) for r in batch))  # distinct, in first-seen order
        row_of = {p: k for k, p in enumerate(prompts)}
        index = torch.tensor([row_of[tuple(r.prompt_ids)] for r in batch], dtype=torch.long)  # (B,) request -> prompt

        decoder, head = split_model(model)
        alive = list(range(len(batch)))  # requests still decoding, in cache-row order
        ids: list[list[int]] = [[] for _ in batch]
        logps: list[list[float]] = [[] for _ in batch]
        was_training = model.training
        model.eval()
        try:
            with autocast(device, self.autocast_bf16):
                prompt_pass = run_prompts(decoder, prompts, device, use_cache=True, pad_id=self.chat.pad_id)
                cache = prompt_pass.cache
                cache.reorder_cache(index.to(device))  # (P, W) -> (B, W): one row per request
                mask = prompt_pass.mask[index].to(device)  # (B, W)
                positions = prompt_pass.lengths[index].to(device)  # (B,) the next token's position
                logits = head(prompt_pass.last)[index.to(device)].float()  # (B, V)
                for _ in range(max(r.max_new_tokens for r in batch)):
                    if sampler is not None:
                        chosen = sampler.draw(logits)
                    elif greedy:
                        chosen = logits.argmax(-1)
                    else:
                        chosen = torch.multinomial(torch.softmax(warpers(None, logits), dim=-1), num_samples=1)[:, 0]
                    logp = torch.log_softmax(logits / temperature, dim=-1).gather(-1, chosen[:, None])[:, 0]
                    keep = []
                    for row, (i, token, value) in enumerate(zip(alive, chosen.tolist(), logp.tolist())):
                        ids[i].append(token)
                        logps[i].append(value)
                        if token not in stops[i] and len(ids[i]) < batch[i].max_new_tokens:
                            keep.append(row)
                    if not keep:
                        break
                    if len(keep) < len(alive):  # rows that stopped leave the batch
                        rows = torch.tensor(keep, dtype=torch.long, device=device)
                        cache.reorder_cache(rows)
                        mask, positions, chosen = mask[rows], positions[rows], chosen[rows]
                        alive = [alive[row] for row in keep]
                        if sampler is not None:
                            sampler.generators = [sampler.generators[row] for row in keep]
                    mask = torch.cat([mask, mask.new_ones((len(alive), 1))], 1)  # (B', W + t)
                    hidden = decoder(input_ids=chosen[:, None], attention_mask=mask, position_ids=positions[:, None],
                                     use_cache=True, **{CACHE_KWARG: cache}).last_hidden_state  # (B', 1, H)
                    positions = positions + 1
                    logits = head(hidden[:, -1]).float()  # (B', V)
        finally:
            model.train(was_training)
        self.calls += 1

        generations = []
        for i, request in enumerate(batch):
            finish = "stop" if ids[i] and ids[i][-1] in stops[i] else "length"
            self.tokens_generated += len(ids[i])
            generations.append(Generation(completion_ids=ids[i], logprobs=logps[i], finish_reason=finish))
        return generations
