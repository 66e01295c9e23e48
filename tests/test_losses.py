import math

import pytest
import torch

from rolekit.losses import entropy_from_logits, kl_estimate, ppo_clip, token_weights


def test_ppo_clip_hand_computed():
    lp = torch.log(torch.tensor([[0.5, 0.9]]))
    old = torch.log(torch.tensor([[0.25, 1.0]]))  # ratios 2.0 and 0.9
    loss, clipped = ppo_clip(lp, old, torch.tensor([1.0]), clip_eps=0.2)
    # A>0: min(2.0*1, 1.2*1) = 1.2 (clipped);  min(0.9, 0.9) = 0.9 (not clipped)
    assert loss[0].tolist() == pytest.approx([-1.2, -0.9])
    assert clipped.tolist() == [[True, False]]
    loss, clipped = ppo_clip(lp, old, torch.tensor([-1.0]), clip_eps=0.2)
    # A<0: min(-2.0, -1.2) = -2.0 (unclipped); min(-0.9, -0.9)
    assert loss[0].tolist() == pytest.approx([2.0, 0.9])
    assert clipped.tolist() == [[False, False]]


def test_ppo_gradient_is_policy_gradient_at_ratio_one():
    lp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, _ = ppo_clip(lp, lp.detach(), torch.tensor([3.0]))
    loss.sum().backward()
    assert lp.grad[0].tolist() == pytest.approx([-3.0, -3.0])


def test_token_weights_hand_computed():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    w = token_weights(mask, "constant", num_sequences=2, num_tokens=4, max_new_tokens=4)
    assert w.flatten().tolist() == pytest.approx([1 / 8] * 3 + [0] + [1 / 8, 0, 0, 0])
    w = token_weights(mask, "token_mean", num_sequences=2, num_tokens=4, max_new_tokens=4)
    assert w.sum().item() == pytest.approx(1.0) and w[1, 0].item() == pytest.approx(0.25)
    w = token_weights(mask, "seq_mean", num_sequences=2, num_tokens=4, max_new_tokens=4)
    assert w.flatten().tolist() == pytest.approx([1 / 6] * 3 + [0] + [1 / 2, 0, 0, 0])
    with pytest.raises(ValueError, match="aggregation"):
        token_weights(mask, "mean", num_sequences=2, num_tokens=4, max_new_tokens=4)


def test_micro_batches_sum_to_the_full_batch_loss():
    torch.manual_seed(0)
    per_token = torch.randn(6, 5)
    mask = (torch.rand(6, 5) > 0.3).long()
    mask[:, 0] = 1
    for agg in ("constant", "token_mean", "seq_mean"):
        kw = dict(num_sequences=6, num_tokens=int(mask.sum()), max_new_tokens=5)
        full = (token_weights(mask, agg, **kw) * per_token).sum()
        parts = sum((token_weights(mask[i:i + 2], agg, **kw) * per_token[i:i + 2]).sum() for i in (0, 2, 4))
        assert parts.item() == pytest.approx(full.item())


def test_kl_estimators_hand_computed():
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    log_r = math.log(0.5)
    assert kl_estimate(lp, ref, "k1").item() == pytest.approx(-log_r)
    assert kl_estimate(lp, ref, "k2").item() == pytest.approx(0.5 * log_r**2)
    assert kl_estimate(lp, ref, "k3").item() == pytest.approx((0.5 - 1) - log_r)
    assert kl_estimate(lp, lp, "k3").item() == 0.0


def test_k3_is_unbiased_for_the_true_kl():
    p = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.4, 0.4, 0.2])
    true_kl = (p * (p / q).log()).sum()
    k3 = kl_estimate(p.log(), q.log(), "k3")
    assert (p * k3).sum().item() == pytest.approx(true_kl.item(), rel=1e-5)


def test_entropy_of_uniform_logits():
    assert entropy_from_logits(torch.zeros(1, 1, 8)).item() == pytest.approx(math.log(8))
