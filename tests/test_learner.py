"""The learner's forward pass: shared prompts, micro-batches, equality with full passes."""

from __future__ import annotations

import random

import attrs
import peft
import pytest
import torch

from rolekit.backends.hf import MIN_SHARED_PREFIX, shared_prefix
from rolekit.learner import bucket_cost, completion_logprobs, micro_batches
from rolekit.testing import peaked_tiny_random
from rolekit.types import Sample


@pytest.fixture(scope="module")
def model():
    lm = peaked_tiny_random()
    torch.manual_seed(0)  # the random LoRA init below: the same whatever ran before in the session
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                             init_lora_weights=False)  # non-zero B: the adapter changes the outputs
    return peft.get_peft_model(lm.model, config)


def samples(n=9, seed=0, header=0):
    """``n`` samples over 3 prompts; with ``header``, the prompts start with that many shared tokens."""
    rng = random.Random(seed)
    common = [rng.randrange(5, 200) for _ in range(header)]
    prompts = [common + [rng.randrange(5, 200) for _ in range(k)] for k in (7, 12, 3)]
    out = []
    for i in range(n):
        c = [rng.randrange(5, 200) for _ in range(rng.choice([1, 2, 5]))]
        out.append(Sample(game="g", role="r", prompt_ids=tuple(prompts[i % 3]), completion_ids=tuple(c),
                          logprobs=tuple([-1.0] * len(c)), advantage=rng.uniform(-1, 1), temperature=0.8))
    return out


def full_pass(model, s):
    """log pi of one sample's completion from one unpadded pass over prompt + completion."""
    ids = torch.tensor([list(s.prompt_ids) + list(s.completion_ids)])
    logits = model(input_ids=ids).logits[0].float() / s.temperature
    logp = torch.log_softmax(logits[len(s.prompt_ids) - 1:-1], -1)
    return logp[torch.arange(len(s.completion_ids)), torch.tensor(s.completion_ids)]


@pytest.mark.parametrize("share,header", [(True, 0), (True, 20), (False, 20)],
                         ids=["shared", "shared-prefix", "single-pass"])
def test_forward_equals_one_full_pass_per_sample_values_and_gradients(model, share, header):
    batch = samples(header=header)
    assert shared_prefix(list({s.prompt_ids for s in batch})) == header  # 0: the prompts run left-padded
    params = [p for p in model.parameters() if p.requires_grad]
    weights = [random.Random(i).uniform(0.5, 2) for i in range(len(batch))]

    model.zero_grad()
    logp, mask, _ = completion_logprobs(model, batch, "cpu", share=share)
    (sum(w * logp[b][mask[b]].sum() for b, w in enumerate(weights))).backward()
    shared = [p.grad.clone() for p in params]

    model.zero_grad()
    expected = [full_pass(model, s) for s in batch]
    (sum(w * e.sum() for w, e in zip(weights, expected))).backward()
    for b, e in enumerate(expected):
        assert logp[b][mask[b]].tolist() == pytest.approx(e.tolist(), abs=1e-4)
        assert mask[b].sum().item() == len(batch[b].completion_ids)
    for a, e in zip(shared, [p.grad for p in params]):
        assert ((a - e).norm() / e.norm()).item() < 1e-4  # fp32 summation order differs, nothing else


def test_single_token_completions_skip_the_second_pass(model):
    batch = [s for s in samples(12, seed=1) if len(s.completion_ids) == 1]
    logp, mask, entropy = completion_logprobs(model, batch, "cpu", with_entropy=True)
    assert logp.shape == (len(batch), 1) and mask.all()
    with torch.no_grad():
        assert logp[:, 0].tolist() == pytest.approx([full_pass(model, s)[0].item() for s in batch], abs=1e-4)
    assert (entropy > 0).all()


def test_micro_batches_keep_the_budget_and_group_shared_prompts():
    batch = samples(30)
    buckets = micro_batches(batch, 40)
    assert sorted(i for b in buckets for i in b) == list(range(30))
    for b in buckets:
        assert bucket_cost([batch[i] for i in b])[1] <= 40 or len(b) == 1
    # 30 samples over 3 prompts: computing each prompt once per bucket, not once per sample
    real = sum(bucket_cost([batch[i] for i in b])[0] for b in buckets)
    assert real < sum(s.num_tokens for s in batch) / 2


def test_a_choice_trains_its_probability_among_the_legal_answers(model):
    from rolekit.learner import policy_logprobs

    prompt, answers = (11, 12, 13, 14), ((40, 41), (50,), (60, 61, 62))
    choice = Sample(game="g", role="r", prompt_ids=prompt, completion_ids=answers[2], logprobs=(-1.0,),
                    advantage=1.0, temperature=0.8, choice_ids=answers)
    free = samples(2)[1]  # a free-text sample in the same batch
    logp, mask, entropy = policy_logprobs(model, [choice, free], "cpu", with_entropy=True)
    with torch.no_grad():
        totals = torch.stack([full_pass(model, attrs.evolve(choice, completion_ids=a, choice_ids=())).sum()
                              for a in answers])
        expected = torch.log_softmax(totals, 0)
        assert mask[0].tolist() == [True] + [False] * (mask.shape[1] - 1)
        assert logp[0, 0].item() == pytest.approx(expected[2].item(), abs=1e-4)
        assert entropy[0, 0].item() == pytest.approx(-(expected.exp() * expected).sum().item(), abs=1e-4)
        assert logp[1][mask[1]].tolist() == pytest.approx(full_pass(model, free).tolist(), abs=1e-4)


def test_entropy_bonus_spreads_a_choice(model):
    import copy

    from rolekit.config import AlgorithmConfig
    from rolekit.learner import Learner, policy_logprobs

    model = copy.deepcopy(model)
    params = [p for p in model.parameters() if p.requires_grad]
    answers = ((40,), (50,), (60,))
    batch = [Sample(game="g", role="r", prompt_ids=(11, 12, 13), completion_ids=a, logprobs=(-1.1,), advantage=0.0,
                    choice_ids=answers) for a in answers]

    def entropy():
        with torch.no_grad():
            return policy_logprobs(model, batch[:1], "cpu", with_entropy=True)[2][0, 0].item()

    before = entropy()
    learner = Learner(model, params, AlgorithmConfig(lr=1e-3, entropy_coef=1.0), device="cpu")
    for _ in range(5):
        learner.step(batch, 1)
    assert entropy() > before + 0.1  # advantages are 0: only the bonus moves the policy
    assert entropy() <= torch.log(torch.tensor(3.0)).item() + 1e-6


def test_shared_prefix_leaves_each_prompt_a_token_and_skips_short_ones():
    header = tuple(range(10, 10 + MIN_SHARED_PREFIX))
    assert shared_prefix([header + (1, 2), header + (1, 3)]) == MIN_SHARED_PREFIX + 1
    assert shared_prefix([header, header + (5,)]) == 0  # capped at 15 (the first keeps a token): too short
    assert shared_prefix([header[:-1] + (1,), header[:-1] + (2,)]) == 0  # too short to pay for its own pass
    assert shared_prefix([header + (1,)]) == 0  # one prompt: nothing to share


def test_micro_batches_count_a_shared_header_once():
    batch = samples(30, header=40)
    buckets = micro_batches(batch, 80)
    assert sorted(i for b in buckets for i in b) == list(range(30))
    for b in buckets:
        cost = bucket_cost([batch[i] for i in b])
        assert cost[1] <= 80 or len(b) == 1
    # two prompts with a 40-token header and a few tokens each fit a bucket of 80 only if the header counts once
    assert any(len({batch[i].prompt_ids for i in b}) > 1 for b in buckets)


def test_micro_batches_end_where_prompts_stop_sharing_a_header():
    games = [samples(12, seed=seed, header=30) for seed in (1, 2)]  # two games: two different headers
    batch = games[0] + games[1]
    buckets = micro_batches(batch, 10_000)  # budget enough for all: only the headers split them
    assert sorted(sorted(b) for b in buckets) == [list(range(12)), list(range(12, 24))]
    assert all(shared_prefix(list({batch[i].prompt_ids for i in b})) >= 30 for b in buckets)


def reference_micro_batches(samples, max_tokens, shared=True):
    """``micro_batches`` before it kept running totals: ``bucket_cost`` recomputed over the
    whole bucket for every candidate (quadratic in a bucket's size)."""
    def reference_cost(batch, shared=True):
        rows = [(s.prompt_ids, c) for s in batch for c in (s.choice_ids or (s.completion_ids,))]
        if not shared:
            return sum(len(p) + len(c) for p, c in rows), len(rows) * max(len(p) + len(c) for p, c in rows)
        prompts = list({tuple(s.prompt_ids) for s in batch})
        common = shared_prefix(prompts)
        real = common + sum(len(p) - common for p in prompts) + sum(len(c) for _, c in rows)
        padded = common + len(prompts) * (max(len(p) for p in prompts) - common) + \
            len(rows) * max(len(c) for _, c in rows)
        return real, padded

    def key(i):
        s = samples[i]
        return (s.prompt_ids, len(s.completion_ids)) if shared else (len(s.prompt_ids), s.prompt_ids,
                                                                      len(s.completion_ids))

    buckets, current, cost = [], [], 0
    for i in sorted(range(len(samples)), key=key):
        real, padded = reference_cost([samples[j] for j in current + [i]], shared)
        alone = reference_cost([samples[i]], shared)[0]
        if current and (padded > max_tokens or (shared and real - cost >= alone)):
            buckets.append(current)
            current, real = [], alone
        current.append(i)
        cost = real
    if current:
        buckets.append(current)
    return buckets, [reference_cost([samples[i] for i in b], shared) for b in buckets]


def random_batch(rng: random.Random) -> list[Sample]:
    """Samples of a few games (each its own header, of random length, 0 to 40 tokens) over a
    few prompts each (some a prefix of another), some identical, some choices, completions of
    0 to 12 tokens."""
    out = []
    for _ in range(rng.randint(1, 3)):
        header = [rng.randrange(5, 50) for _ in range(rng.randint(0, 40))]
        prompts = [tuple(header + [rng.randrange(5, 50) for _ in range(rng.randint(1, 15))])
                   for _ in range(rng.randint(1, 6))]
        prompts += [p[:rng.randint(1, len(p))] for p in prompts if rng.random() < 0.3]  # one a prefix of another
        for _ in range(rng.randint(1, 25)):
            c = tuple(rng.randrange(5, 50) for _ in range(rng.randint(0, 12)))
            choices = tuple({tuple(rng.randrange(5, 50) for _ in range(rng.randint(1, 3))) for _ in range(3)}) \
                if rng.random() < 0.2 else ()
            out.append(Sample(game="g", role="r", prompt_ids=rng.choice(prompts), completion_ids=choices[0] if choices
                              else c, logprobs=(-1.0,) * len(c), advantage=0.0, choice_ids=choices))
    rng.shuffle(out)
    return out


def test_incremental_micro_batches_make_the_old_algorithms_buckets():
    rng = random.Random(18)
    for _ in range(300):
        batch = random_batch(rng)
        budget = rng.choice([8, 30, 60, 120, 400, 10_000])
        for shared in (True, False):
            expected, costs = reference_micro_batches(batch, budget, shared)
            buckets = micro_batches(batch, budget, shared)
            assert buckets == expected, (budget, shared)
            assert [bucket_cost([batch[i] for i in b], shared) for b in buckets] == costs


def test_recomputed_old_logprobs_come_from_epoch_zeros_own_pass(model, monkeypatch):
    """With ``recompute_logprobs``, PPO's old logprobs are epoch 0's forward pass, made before
    any update: no separate pass runs (forward passes = epochs x micro-batches), and the
    update equals one whose samples carry logprobs from a no-grad pass before the step."""
    from rolekit import learner as learner_module
    from rolekit.config import AlgorithmConfig
    from rolekit.learner import Learner

    calls = []
    forward = learner_module.policy_logprobs
    monkeypatch.setattr(learner_module, "policy_logprobs", lambda *a, **kw: calls.append(1) or forward(*a, **kw))
    batch = samples(n=9, seed=3)
    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    cfg = AlgorithmConfig(lr=1e-2, ppo_epochs=3, micro_batch_tokens=40, recompute_logprobs=True)

    def run(cfg, batch):
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)
        learner = Learner(model, params, cfg, device="cpu")
        calls.clear()
        metrics = learner.step(batch, max_new_tokens=5)
        return metrics, len(calls), [p.detach().clone() for p in params]

    metrics, passes, recomputed = run(cfg, batch)
    assert passes == cfg.ppo_epochs * metrics["micro_batches"]  # a separate recompute would add one per bucket
    assert metrics["by_role"]["g/r"]["approx_kl_old"] == 0.0  # epoch 0: the ratio is exactly 1

    with torch.no_grad():  # the same old logprobs, from a pass before the step, carried by the samples
        for p, s in zip(params, start):
            p.copy_(s)
        logp, mask, _ = completion_logprobs(model, batch, "cpu")
    carried = [attrs.evolve(s, logprobs=tuple(logp[b][mask[b]].tolist())) for b, s in enumerate(batch)]
    _, _, expected = run(attrs.evolve(cfg, recompute_logprobs=False), carried)
    assert any(not torch.equal(a, b) for a, b in zip(recomputed, start))  # the epochs moved the weights
    for a, b in zip(recomputed, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        for p, s in zip(params, start):
            p.copy_(s)  # the module-scoped model as the other tests found it


def test_lr_and_entropy_bonus_follow_their_linear_schedules(model):
    """``lr_final`` / ``entropy_coef_final``: linear from the start value at step 0 to the
    final value at the run's last step; the optimizer and the loss use this step's values."""
    from rolekit.config import AlgorithmConfig
    from rolekit.learner import Learner, scheduled

    assert scheduled(1e-4, None, 7, 10) == 1e-4
    assert [scheduled(0.3, 0.0, s, 4) for s in range(5)] == pytest.approx([0.3, 0.2, 0.1, 0.0, 0.0])
    assert [scheduled(0.3, 0.0, s, 6, begin=2) for s in range(7)] == pytest.approx([0.3, 0.3, 0.3, 0.2, 0.1, 0.0, 0.0])
    assert scheduled(0.3, 0.1, 5, 4, begin=9) == 0.3 and scheduled(0.3, 0.1, 9, 10, begin=9) == 0.3
    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    cfg = AlgorithmConfig(lr=1e-3, lr_final=1e-5, entropy_coef=0.3, entropy_coef_final=0.0)
    learner = Learner(model, params, cfg, device="cpu")
    learner.at_step(2, 5)
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 + (1e-5 - 1e-3) * 0.5)
    metrics = learner.step(samples(), max_new_tokens=5)
    assert metrics["lr"] == pytest.approx(5.05e-4) and metrics["entropy_coef"] == pytest.approx(0.15)
    learner.at_step(4, 5)
    assert learner.entropy_coef == 0.0 and learner.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)
    with torch.no_grad():
        for p, s in zip(params, start):
            p.copy_(s)  # the module-scoped model as the other tests found it


def test_identical_rows_run_once_with_the_values_and_gradients_of_one_pass_each(model, monkeypatch):
    """Samples with the same prompt, completion and temperature (each Kuhn information set's
    legal answers, scored for every sample that reached it) run once; each sample still gets
    its value, and gradients sum over the samples as if each had its own pass."""
    from rolekit import learner as learner_module

    batch = samples(n=6, seed=5)
    batch = batch + [attrs.evolve(s, advantage=-s.advantage) for s in batch[:4]]  # 4 repeats
    rows = []
    hidden = learner_module._hidden_shared
    monkeypatch.setattr(learner_module, "_hidden_shared", lambda d, ss, *a: rows.append(len(ss)) or hidden(d, ss, *a))
    params = [p for p in model.parameters() if p.requires_grad]
    weights = [random.Random(i).uniform(0.5, 2) for i in range(len(batch))]

    model.zero_grad()
    logp, mask, entropy = completion_logprobs(model, batch, "cpu", share=True, with_entropy=True)
    (sum(w * logp[b][mask[b]].sum() for b, w in enumerate(weights))).backward()
    assert rows == [6]  # the 10 samples' 6 distinct rows
    deduped = [p.grad.clone() for p in params]
    model.zero_grad()
    expected = [full_pass(model, s) for s in batch]
    (sum(w * e.sum() for w, e in zip(weights, expected))).backward()
    for b, e in enumerate(expected):
        torch.testing.assert_close(logp[b][mask[b]], e, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(entropy[6:], entropy[:4])
    for a, e in zip(deduped, [p.grad for p in params]):
        assert ((a - e).norm() / e.norm()).item() < 1e-4  # fp32 summation order differs, nothing else
