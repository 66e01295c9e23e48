"""The hf backend and the chat tokenizer on tiny-random."""

from __future__ import annotations

import copy

import pytest
import torch

from rolekit.backends import Backend
from rolekit.backends.hf import HFBackend
from rolekit.chat import ChatTokenizer
from rolekit.models import TINY, load_model
from rolekit.testing import peaked_tiny_random
from rolekit.types import GenerationRequest

PROMPTS = ["Hi", "What is the capital of France? Answer in one word.", "Count: 1 2 3", "Tell me a story."]


@pytest.fixture(scope="module")
def lm():
    return peaked_tiny_random()


@pytest.fixture(scope="module")
def chat(lm) -> ChatTokenizer:
    return ChatTokenizer(lm.tokenizer)


@pytest.fixture
def backend(lm, chat) -> HFBackend:
    return HFBackend(lm.model, chat)


def requests_for(chat, max_new=(7, 3, 11, 5), **sampling):
    return [GenerationRequest(chat.encode(p), max_new_tokens=m, **sampling) for p, m in zip(PROMPTS, max_new)]


def teacher_forced_logprobs(model, request, generation):
    """log pi(completion | prompt) from one unpadded forward pass (what PPO recomputes)."""
    ids = torch.tensor([request.prompt_ids + generation.completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0].float()  # (T, V)
    temperature = request.temperature if request.temperature > 0 else 1.0
    p = len(request.prompt_ids)
    logp = torch.log_softmax(logits[p - 1 : -1] / temperature, dim=-1)
    return logp.gather(-1, torch.tensor(generation.completion_ids)[:, None])[:, 0]


# --------------------------------------------------------------------------- backend


def test_is_a_backend(backend):
    assert isinstance(backend, Backend)
    assert backend.name == "hf"


def test_generates_real_tokens(backend, chat):
    [g] = backend.generate([GenerationRequest(chat.encode("Hello"), max_new_tokens=6)])
    assert len(g.completion_ids) == 6 and g.finish_reason == "length"
    assert all(0 <= t < len(chat.tokenizer) for t in g.completion_ids)
    assert all(lp <= 0 and lp > -100 for lp in g.logprobs)
    assert isinstance(chat.decode(g.completion_ids), str)
    assert backend.calls == 1 and backend.tokens_generated == 6


def test_mixed_lengths_in_one_batch_match_one_at_a_time(backend, chat):
    requests = requests_for(chat, temperature=0.0)
    batched = backend.generate(requests)
    assert backend.calls == 1
    for request, generation in zip(requests, batched):
        [alone] = backend.generate([request])
        assert generation.completion_ids == alone.completion_ids
        assert generation.logprobs == pytest.approx(alone.logprobs, abs=1e-4)


@pytest.mark.parametrize(
    "sampling",
    [dict(temperature=0.0), dict(temperature=1.0), dict(temperature=0.7), dict(temperature=1.3, top_p=0.9, top_k=20)],
    ids=["greedy", "t1", "t0.7", "t1.3-top-p-k"],
)
def test_logprobs_match_a_teacher_forced_forward_pass(backend, lm, chat, sampling):
    torch.manual_seed(0)
    requests = requests_for(chat, **sampling)
    generations = backend.generate(requests)
    for request, generation in zip(requests, generations):
        expected = teacher_forced_logprobs(lm.model, request, generation)
        assert torch.allclose(torch.tensor(generation.logprobs), expected, atol=1e-4)


def test_max_new_tokens_is_per_request(backend, chat):
    requests = requests_for(chat, max_new=(1, 9, 4, 2))
    generations = backend.generate(requests)
    assert backend.calls == 1
    for request, generation in zip(requests, generations):
        assert generation.finish_reason == "length"
        assert len(generation.completion_ids) == len(generation.logprobs) == request.max_new_tokens
    assert backend.tokens_generated == 16


def test_zero_max_new_tokens(backend, chat):
    [g] = backend.generate([GenerationRequest(chat.encode("x"), max_new_tokens=0)])
    assert g.completion_ids == () and g.finish_reason == "length" and backend.calls == 0


def test_stops_at_and_keeps_the_first_end_of_turn_token(lm, chat):
    request = GenerationRequest(chat.encode("Hi"), max_new_tokens=8, temperature=0.0)
    [free] = HFBackend(lm.model, chat).generate([request])
    stop = free.completion_ids[2]
    cut = free.completion_ids.index(stop)
    eot_chat = copy.copy(chat)
    eot_chat.eos_ids = frozenset({stop})
    [stopped] = HFBackend(lm.model, eot_chat).generate([request])
    assert stopped.finish_reason == "stop"
    assert stopped.completion_ids == free.completion_ids[: cut + 1]
    assert stopped.logprobs == pytest.approx(free.logprobs[: cut + 1], abs=1e-5)


def test_greedy_is_deterministic(backend, chat):
    requests = requests_for(chat, temperature=0.0)
    torch.manual_seed(1)
    first = backend.generate(requests)
    torch.manual_seed(2)
    assert backend.generate(requests) == first


def test_seeded_sampling_is_reproducible(backend, chat):
    requests = requests_for(chat, temperature=1.0)
    torch.manual_seed(123)
    first = backend.generate(requests)
    torch.manual_seed(123)
    assert backend.generate(requests) == first
    torch.manual_seed(124)
    assert backend.generate(requests) != first


def test_batches_by_sampling_params_and_limits(lm, chat):
    requests = [
        GenerationRequest(chat.encode(" a" * n), max_new_tokens=2, temperature=t)
        for n, t in zip([5, 1, 9, 3, 7, 2], [1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    ]
    backend = HFBackend(lm.model, chat, max_batch_size=2)
    batches = backend._batches(requests)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(len(b) <= 2 for b in batches)
    assert all(len({requests[i].temperature for i in b}) == 1 for b in batches)
    for b in batches:  # sorted by prompt length within a batch
        lengths = [len(requests[i].prompt_ids) for i in b]
        assert lengths == sorted(lengths)
    generations = backend.generate(requests)
    assert backend.calls == len(batches) == 3  # 2 greedy in one, 4 sampled in two
    assert [len(g.completion_ids) for g in generations] == [2] * 6

    width = max(len(r.prompt_ids) for r in requests) + 2
    tight = HFBackend(lm.model, chat, max_batch_tokens=width)
    assert all(len(b) == 1 for b in tight._batches(requests))


def test_restores_training_mode_and_syncs(lm, chat):
    backend = HFBackend(lm.model, chat)
    lm.model.train()
    try:
        backend.generate([GenerationRequest(chat.encode("x"), max_new_tokens=1)])
        assert lm.model.training
    finally:
        lm.model.eval()
    other = load_model(TINY).model
    backend.sync(other)
    assert backend.model is other and backend.version == 1
    backend.sync(other)
    assert backend.version == 2


# --------------------------------------------------------------------------- chat


def test_encode_renders_the_chat_template(chat):
    ids = chat.encode("Hi there")
    assert ids == chat.encode([{"role": "user", "content": "Hi there"}])
    text = chat.decode(ids, skip_special_tokens=False)
    assert text == chat.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi there"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n")
    assert all(isinstance(i, int) for i in ids)
    assert chat.decode(ids) == chat.decode(ids, skip_special_tokens=False).replace("<|im_start|>", "").replace(
        "<|im_end|>", ""
    )


def test_end_of_turn_ids(chat):
    im_end = chat.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in chat.eos_ids
    assert chat.pad_id == chat.tokenizer.pad_token_id


@pytest.mark.parametrize("finish_reason", ["stop", "length"])
def test_continue_ids_extends_the_conversation(chat, finish_reason):
    prompt = chat.encode("Let's play a game.")
    answer = chat._ids("Sure, I'm ready!")
    if finish_reason == "stop":
        answer += (chat.tokenizer.convert_tokens_to_ids("<|im_end|>"),)
    context = prompt + answer
    ids = chat.continue_ids(context, finish_reason, "Your move.")
    assert ids[: len(context)] == context
    conversation = [
        {"role": "user", "content": "Let's play a game."},
        {"role": "assistant", "content": "Sure, I'm ready!"},
        {"role": "user", "content": "Your move."},
    ]
    assert chat.decode(ids, skip_special_tokens=False) == chat.render(conversation)
    assert ids == chat.encode(conversation)  # for this template, also the same ids


def test_continue_ids_after_a_generated_turn(backend, chat):
    first = GenerationRequest(chat.encode("Hi"), max_new_tokens=5)
    [g] = backend.generate([first])
    ids = chat.continue_ids(first.prompt_ids + g.completion_ids, g.finish_reason, "And then?")
    assert ids[: len(first.prompt_ids) + len(g.completion_ids)] == first.prompt_ids + g.completion_ids
    assert chat.decode(ids, skip_special_tokens=False).endswith(
        "<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n<|im_start|>assistant\n"
    )
    [follow_up] = backend.generate([GenerationRequest(ids, max_new_tokens=3)])
    assert len(follow_up.completion_ids) == 3


LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def test_continuation_text_for_a_llama3_style_template(chat):
    tokenizer = copy.deepcopy(chat.tokenizer)
    tokenizer.chat_template = LLAMA3_TEMPLATE
    llama = ChatTokenizer(tokenizer)
    assert llama.continuation_text("Your move.") == (
        "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nYour move.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_a_template_that_rewrites_history_is_refused(chat):
    tokenizer = copy.deepcopy(chat.tokenizer)
    tokenizer.chat_template = (
        "{% for m in messages %}{% if loop.last %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    )
    with pytest.raises(ValueError, match="prefix"):
        ChatTokenizer(tokenizer).continue_ids([1, 2], "length", "next")


@pytest.mark.parametrize("share", [True, False], ids=["shared", "single-pass"])
@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_score_shares_prompts_and_matches_one_full_pass_per_pair(lm, chat, batch_size, share):
    """Both scoring paths (prompt pass + cached completions; padded single passes) equal an unpadded full pass."""
    from rolekit.backends.hf import teacher_forced

    prompts = [chat.encode(p) for p in PROMPTS[:3]]
    completions = [chat.text_ids(t) for t in ("Paris", "bet]", "a much longer continuation here", "x")]
    pairs = [(p, c) for p in prompts for c in completions] + [(prompts[1], [])]
    pairs = pairs[5:] + pairs[:5]  # prompts interleaved, not grouped
    stop = [chat.text_ids("]")[0], *sorted(chat.eos_ids)]
    got = teacher_forced(lm.model, pairs, pad_id=chat.pad_id, temperature=0.7, batch_size=batch_size, stop_ids=stop,
                         share=share)
    assert len(got) == len(pairs)
    for (p, c), values in zip(pairs, got):
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(torch.tensor([list(p) + list(c)])).logits[0].float() / 0.7, -1)
        expected = [logp[len(p) - 1 + j, t].item() for j, t in enumerate(c)]
        expected.append(torch.logsumexp(logp[len(p) + len(c) - 1, stop], -1).item())
        assert values == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("cache_tokens", [1, 40])  # a row per pass; a few rows per pass
def test_score_in_chunks_of_copied_cache_rows_matches_one_pass(lm, chat, monkeypatch, cache_tokens):
    """Many answers to long prompts are scored in chunks (each copies its prompt's cache row):
    the same values as all continuations in one pass, and the prompt cache is left intact."""
    from rolekit.backends import hf

    prompts = [chat.encode(p) for p in PROMPTS[:3]]
    completions = [chat.text_ids(t) for t in ("Paris", "bet]", "a much longer continuation here", "x")]
    pairs = [(p, c) for c in completions for p in prompts]
    stop = [chat.text_ids("]")[0], *sorted(chat.eos_ids)]
    whole = hf.teacher_forced(lm.model, pairs, pad_id=chat.pad_id, temperature=0.7, batch_size=8, stop_ids=stop,
                              share=True)
    passes = []
    monkeypatch.setattr(hf, "CONTINUATION_CACHE_TOKENS", cache_tokens)
    run = hf.run_continuations
    monkeypatch.setattr(hf, "run_continuations", lambda *a, **k: passes.append(len(a[2])) or run(*a, **k))
    chunked = hf.teacher_forced(lm.model, pairs, pad_id=chat.pad_id, temperature=0.7, batch_size=8, stop_ids=stop,
                                share=True)
    assert len(passes) > 1 and sum(passes) == len(pairs)
    assert max(passes) == (1 if cache_tokens == 1 else max(1, cache_tokens // max(len(p) for p in prompts)))
    for a, b in zip(whole, chunked):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-5)  # float noise: different batch shapes
