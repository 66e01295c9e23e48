"""Policy-gradient losses as pure tensor functions.

Shapes: B sequences (completions) by T completion tokens, ``mask`` 1 on real tokens.
"""

from __future__ import annotations

import torch

AGGREGATIONS = ("constant", "token_mean", "seq_mean")
KL_ESTIMATORS = ("k1", "k2", "k3")


def token_weights(mask: torch.Tensor, aggregation: str, *, num_sequences: int, num_tokens: int,
                  max_new_tokens: "int | torch.Tensor") -> torch.Tensor:
    """Per-token weights w such that loss = sum(w * per_token_loss) over the *whole* batch.

    Denominators are global (``num_sequences`` / ``num_tokens`` of the full rollout batch),
    so micro-batches can be summed into exactly the full-batch loss.

    - ``constant``: sum over tokens / (num_sequences * max_new_tokens)  (Dr. GRPO; SPIRAL)
      (``max_new_tokens``: one budget, or each sample's as a (B, 1) tensor)
    - ``token_mean``: sum over tokens / num_tokens                          (DAPO)
    - ``seq_mean``: mean over sequences of the per-sequence token mean    (GRPO)
    """
    mask = mask.float()  # (B, T)
    if aggregation == "constant":
        return mask / (num_sequences * max_new_tokens)
    if aggregation == "token_mean":
        return mask / num_tokens
    if aggregation == "seq_mean":
        return mask / mask.sum(dim=1, keepdim=True).clamp(min=1) / num_sequences
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


def ppo_clip(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
             clip_eps: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO-clip loss (Schulman et al. 2017, eq. 7), negated for minimisation.

    logprobs, old_logprobs: (B, T); advantages: (B,). Returns (loss (B, T), clipped (B, T) bool).
    """
    ratio = torch.exp(logprobs - old_logprobs)  # (B, T)
    adv = advantages[:, None]  # (B, 1)
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv
    loss = -torch.minimum(unclipped, clipped)
    return loss, (clipped < unclipped)


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman 2020, "Approximating KL").

    With log r = log pi_ref - log pi: k1 = -log r; k2 = (log r)^2 / 2; k3 = (r - 1) - log r.
    """
    log_r = ref_logprobs - logprobs
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    if kind == "k3":
        return torch.expm1(log_r) - log_r
    raise ValueError(f"kl estimator must be one of {KL_ESTIMATORS}, got {kind!r}")


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of softmax(logits): (B, T, V) -> (B, T)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)
