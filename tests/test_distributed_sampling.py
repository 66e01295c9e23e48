"""Seeded sampling (``rollout.seeded_sampling``): a request's tokens depend on its seed alone,
not on its batch -- what lets Ray workers replay one process's episodes."""

import math

import pytest
import torch

from rolekit.backends.hf import HFBackend, SeededSampler, truncated
from rolekit.table import AskRequest, ModelResponder, ask_seed
from rolekit.types import GenerationRequest


@pytest.fixture(scope="module")
def backend(tiny):
    return HFBackend(tiny.model, tiny.tokenizer, max_batch_size=16)


def test_a_seeded_request_samples_the_same_tokens_alone_and_in_any_batch(backend):
    chat = backend.chat
    mine = GenerationRequest(chat.encode("Name a colour."), max_new_tokens=12, temperature=0.9, seed=42)
    others = [GenerationRequest(chat.encode("x " * k + "Count."), max_new_tokens=4 + k, seed=k) for k in range(6)]
    alone = backend.generate([mine])[0]
    torch.manual_seed(123)  # the global RNG plays no part
    crowded = backend.generate(others[:3] + [mine] + others[3:])[3]
    assert crowded.completion_ids == alone.completion_ids and len(alone.completion_ids) > 3
    assert crowded.logprobs == pytest.approx(alone.logprobs, abs=1e-4)
    other_seed = backend.generate([GenerationRequest(mine.prompt_ids, max_new_tokens=12, temperature=0.9, seed=43)])
    assert other_seed[0].completion_ids != alone.completion_ids


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (2, 1.0), (0, 0.7), (3, 0.8)])
def test_the_sampler_draws_from_the_tempered_and_cut_distribution(top_k, top_p):
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]])
    temperature = 0.8
    draws = 6000
    sampler = SeededSampler(range(draws), temperature=temperature, top_k=top_k, top_p=top_p)
    out = sampler(None, logits.expand(draws, -1))  # one row per seed
    assert torch.all((out == 0).sum(-1) == 1) and torch.all(torch.isinf(out).sum(-1) == 4)
    counts = torch.bincount(out.argmax(-1), minlength=5)
    expected = truncated(torch.softmax(logits[0] / temperature, -1), top_p=top_p, top_k=top_k)
    for seen, p in zip((counts / draws).tolist(), expected.tolist()):
        assert seen == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / draws) + 1e-9)


def test_every_ask_and_every_answer_of_it_has_its_own_seed(backend):
    seeds = {ask_seed(episode, k) for episode in range(50) for k in range(20)}
    assert len(seeds) == 1000 and all(0 <= s < 2**63 for s in seeds)
    assert ask_seed(7, 3) == ask_seed(7, 3)

    responder = ModelResponder("policy", backend, backend.chat, max_new_tokens=8, seeded=True)
    ask = AskRequest("g", "r", "Say something.", 4, {}, seed=ask_seed(0, 0))
    first = responder.respond([ask])[0]
    assert len({a.completion_ids for a in first}) > 1  # answer j samples from seed + j
    again = responder.respond([AskRequest("g", "r", "Something else first.", 2, {}, seed=5), ask])[1]
    assert [a.completion_ids for a in again] == [a.completion_ids for a in first]
    choice = AskRequest("g", "r", "Pick.", 6, {}, choices=("check", "bet", "fold", "call"), seed=9)
    picks = [a.text for a in responder.respond([choice])[0]]
    torch.manual_seed(0)
    assert [a.text for a in responder.respond([choice])[0]] == picks
