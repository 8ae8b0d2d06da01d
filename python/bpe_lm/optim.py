"""AdamW, the cosine learning-rate schedule and gradient clipping, written from scratch (CS336 §4)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import torch
from torch import Tensor


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), bias-corrected, in the exact arithmetic of
    `torch.optim.AdamW`: decay θ ← θ(1 − αλ); m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
    θ ← θ − α/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε).

    With `foreach` (the default where supported), each group's tensors update in a few multi-tensor
    kernels (`torch._foreach_*`) instead of a loop of small ones.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        *,
        foreach: bool | None = None,
    ) -> None:
        if lr < 0:
            raise ValueError(f"invalid learning rate {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}: each must be in [0, 1)")
        if eps < 0:
            raise ValueError(f"invalid eps {eps}")
        if weight_decay < 0:
            raise ValueError(f"invalid weight_decay {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, foreach=foreach))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            # Tensors that share device, dtype and step count update together.
            buckets: dict[tuple, list[Tensor]] = defaultdict(list)
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamW does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                buckets[(p.device, p.dtype, state["step"])].append(p)
            use_foreach = group["foreach"]
            for (_, _, step), params in buckets.items():
                grads = [p.grad for p in params]
                exp_avgs = [self.state[p]["exp_avg"] for p in params]
                exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
                bias_correction1 = 1 - beta1**step
                bias_correction2_sqrt = math.sqrt(1 - beta2**step)
                step_size = lr / bias_correction1
                if use_foreach is False:
                    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
                        p.mul_(1 - lr * wd)
                        m.lerp_(g, 1 - beta1)
                        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                        denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
                        p.addcdiv_(m, denom, value=-step_size)
                    continue
                if wd != 0:
                    torch._foreach_mul_(params, 1 - lr * wd)
                torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
                torch._foreach_mul_(exp_avg_sqs, beta2)
                torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
                denom = torch._foreach_sqrt(exp_avg_sqs)
                torch._foreach_div_(denom, bias_correction2_sqrt)
                torch._foreach_add_(denom, eps)
                torch._foreach_addcdiv_(params, exp_avgs, denom, -step_size)
        return loss


def cosine_lr(it: float, max_lr: float, min_lr: float, warmup_iters: float, cosine_cycle_iters: float) -> float:
    """Linear warmup from 0 to `max_lr` over `warmup_iters`, cosine decay to `min_lr` at
    `cosine_cycle_iters`, then `min_lr`."""
    if it < warmup_iters:
        return max_lr * it / warmup_iters
    if it <= cosine_cycle_iters:
        span = cosine_cycle_iters - warmup_iters
        progress = (it - warmup_iters) / span if span > 0 else 1.0
        return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)
    return min_lr


def clip_grad_norm(parameters: Iterable[Tensor], max_l2_norm: float, eps: float = 1e-6) -> Tensor:
    """Scales all gradients by max_l2_norm / (norm + eps) when their global L2 norm exceeds
    `max_l2_norm`. Returns the norm before clipping, as a tensor (reading it is the caller's choice, so
    a training step need not wait for the device)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = torch._foreach_norm(grads)
    total = torch.linalg.vector_norm(torch.stack([n.to(grads[0].device) for n in norms]))
    scale = torch.clamp(max_l2_norm / (total + eps), max=1.0)
    torch._foreach_mul_(grads, scale)
    return total
