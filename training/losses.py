"""Losses of the official ACT loss head (official-trm-hrm.md §2), per row so the trainer can mix them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.data import IGNORE_LABEL


def _log_stablemax(x: torch.Tensor) -> torch.Tensor:
    # s(x) = 1/(1-x) for x < 0, x+1 otherwise; log(s / sum s). Stays finite where softmax saturates.
    # Each branch sees only its own half-line: torch.where back-propagates through both, and 1/(1-x) at
    # x == 1 (a common bf16 logit) would turn the unused branch's inf gradient into NaN.
    s = torch.where(x < 0, 1 / (1 - x.clamp(max=0)), x.clamp(min=0) + 1)
    return torch.log(s / s.sum(-1, keepdim=True))


def token_loss_per_row(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean cross entropy over each row's labelled tokens -> [B]; stable-max runs in float64 as officially."""
    mask = labels != IGNORE_LABEL
    safe = torch.where(mask, labels, 0)
    if kind == "stablemax":
        logp = _log_stablemax(logits.to(torch.float64))
        ce = -logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    elif kind == "softmax":
        ce = F.cross_entropy(logits.float().transpose(1, 2), safe, reduction="none")
    else:
        raise ValueError(f"unknown loss {kind!r}")
    ce = torch.where(mask, ce, 0)
    return (ce.sum(-1) / mask.sum(-1).clamp_min(1)).to(torch.float32)


def answer_correct(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row exactly right [B] bool, token accuracy per row [B]) of the argmax answer."""
    mask = labels != IGNORE_LABEL
    hit = (logits.argmax(-1) == labels) & mask
    n = mask.sum(-1).clamp_min(1)
    return hit.sum(-1) == mask.sum(-1), hit.sum(-1) / n
