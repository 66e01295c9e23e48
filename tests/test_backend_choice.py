"""rollout.backend: the config key, and make_backend's answers (the vLLM backend's own tests
are in tests_vllm/, run by ``make test-vllm`` on vLLM's CPU build)."""

from __future__ import annotations

import importlib.util

import pytest

from rolekit.backends import make_backend
from rolekit.backends.hf import HFBackend
from rolekit.config import ConfigError, from_dict
from rolekit.models import TINY, load_model


def test_config_names_the_backend_key():
    base = {"curriculum": [{"game": "kuhn_poker"}]}
    assert from_dict(base).rollout.backend == "hf"
    assert from_dict({**base, "rollout": {"backend": "vllm"}}).rollout.backend == "vllm"
    with pytest.raises(ConfigError, match="rollout.*backend must be 'hf' or 'vllm', got 'vlm'; did you mean 'vllm'"):
        from_dict({**base, "rollout": {"backend": "vlm"}})


def test_make_backend():
    lm = load_model(TINY)
    assert isinstance(make_backend("hf", lm.model, lm.tokenizer, max_batch_size=4), HFBackend)
    with pytest.raises(ValueError, match="unknown backend 'trt'"):
        make_backend("trt", lm.model, lm.tokenizer)
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ImportError, match=r"rolekit\[vllm\]"):
            make_backend("vllm", lm.model, lm.tokenizer)
    else:  # the CPU build refuses tiny-random's 16-dim heads before starting an engine
        with pytest.raises(ValueError, match="64 dims"):
            make_backend("vllm", lm.model, lm.tokenizer)
