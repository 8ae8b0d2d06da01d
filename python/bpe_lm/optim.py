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

    Three paths with the same arithmetic (tested against each other and against torch's):
    - `foreach=False`: the reference, a loop of plain tensor ops per parameter;
    - default: each group's tensors update in a few multi-tensor kernels (`torch._foreach_*`);
    - `compiled=True`: the update of each bucket is one `torch.compile`d function, so each parameter's
      update is one fused kernel. The learning rate and step count enter it as 0-d tensors on the
      parameters' device, set with `fill_` (a kernel argument, not a host-to-device copy): changing them
      never recompiles and never waits for the device, so the step can sit inside a CUDA graph's loop.
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
        compiled: bool = False,
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
        self.compiled = compiled
        self._scalars: dict[torch.device, tuple[Tensor, Tensor]] = {}  # device -> (lr, step) for the compiled path

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._group_step(group)
        return loss

    def _group_step(self, group: dict) -> None:
        self._adamw_group(group)

    def _adamw_group(self, group: dict) -> None:
        """One AdamW step for the parameters of `group`."""
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
        for (device, _, step), params in buckets.items():
            grads = [p.grad for p in params if p.grad is not None]  # all of them: bucketed above
            exp_avgs = [self.state[p]["exp_avg"] for p in params]
            exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
            if self.compiled:
                if device not in self._scalars:
                    self._scalars[device] = (
                        torch.zeros((), dtype=torch.float32, device=device),
                        torch.zeros((), dtype=torch.float32, device=device),
                    )
                lr_t, step_t = self._scalars[device]
                lr_t.fill_(lr)
                step_t.fill_(step)
                _compiled_update()(params, grads, exp_avgs, exp_avg_sqs, lr_t, step_t, beta1, beta2, eps, wd)
                continue
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


# Newton–Schulz coefficients of Muon (Keller Jordan, 2024): the quintic p(x) = a·x + b·x³ + c·x⁵ applied to
# the singular values of X. (3.4445, -4.7750, 2.0315) maximise the slope at zero, so small singular values
# grow fast, while p keeps every value within about [0.7, 1.2] after five steps: an approximate
# orthogonalisation U Vᵀ of G = U S Vᵀ, much cheaper than an SVD and stable in low precision.
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NEWTON_SCHULZ_STEPS = 5


def newton_schulz(g: Tensor, steps: int = NEWTON_SCHULZ_STEPS, eps: float = 1e-7) -> Tensor:
    """Approximately the nearest semi-orthogonal matrix to `g` (its U Vᵀ), in float32: of a 2-D matrix, or of
    each matrix of a (k, rows, cols) stack, all at once (one batched GEMM per product instead of k small ones)."""
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    x = g.float()
    stacked = x if x.ndim == 3 else x.unsqueeze(0)
    tall = x.shape[-2] > x.shape[-1]
    if tall:  # iterate on the wide orientation: X Xᵀ is the smaller Gram matrix
        stacked = stacked.mT
    # Spectral norm ≤ Frobenius norm ≤ 1: inside p's basin.
    stacked = stacked / (stacked.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        gram = stacked @ stacked.mT
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b·G + c·G²
        stacked = torch.baddbmm(stacked, poly, stacked, beta=a)  # a·X + (b·G + c·G²) X
    if tall:
        stacked = stacked.mT
    return (stacked if x.ndim == 3 else stacked[0]).to(g.dtype)


class Muon(AdamW):
    """Muon for the 2-D hidden matrices, AdamW for everything else, as one optimizer with one state dict.

    Groups whose "kind" is "muon" take the Muon step: momentum m ← μ·m + g; the Nesterov update
    u = g + μ·m; its orthogonalisation O = newton_schulz(u), scaled by √max(1, rows / cols) so that every
    shape takes steps of about the same size; decoupled weight decay θ ← θ(1 − αλ); θ ← θ − α·O. Other groups
    take `AdamW`'s step. `param_groups_for` splits a model's parameters by shape and name.
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, **adamw) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"invalid momentum {momentum}: must be in [0, 1)")
        super().__init__(params, lr=lr, **adamw)
        for group in self.param_groups:
            group.setdefault("kind", "adamw")
            group.setdefault("momentum", momentum)

    def _group_step(self, group: dict) -> None:
        if group["kind"] == "muon":
            self._muon_group(group)
        else:
            self._adamw_group(group)

    def _muon_group(self, group: dict) -> None:
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        by_shape: dict[tuple[tuple[int, ...], torch.dtype, torch.device], list[tuple[Tensor, Tensor]]] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.ndim != 2:
                raise ValueError(f"Muon updates 2-D matrices; a parameter of shape {tuple(p.shape)} is in a muon group")
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["momentum_buffer"] = torch.zeros_like(p)
            state["step"] += 1
            buf = state["momentum_buffer"]
            buf.mul_(mu).add_(p.grad)
            update = p.grad.add(buf, alpha=mu)  # Nesterov
            by_shape.setdefault((tuple(p.shape), p.dtype, p.device), []).append((p, update))
        # Matrices of one shape (a model's layers repeat theirs) are orthogonalised as one stack.
        for (shape, _, _), pairs in by_shape.items():
            scale = max(1.0, shape[0] / shape[1]) ** 0.5
            orthogonal = newton_schulz(torch.stack([u for _, u in pairs]))
            for (p, _), o in zip(pairs, orthogonal):
                p.mul_(1 - lr * wd)
                p.add_(o, alpha=-lr * scale)


def param_groups_for(model: torch.nn.Module, lr: float, muon_lr: float, head_lr: float = 0.0) -> list[dict]:
    """Muon for the hidden 2-D weight matrices; AdamW for the token embeddings, the LM head (at `head_lr`
    when set and the head is untied) and every gain and other non-matrix parameter. Each group carries
    "lr_scale", its learning rate relative to the schedule's `lr`, so one schedule drives them all."""
    muon, adamw, head = [], [], []
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) in seen:  # a tied head is the embedding: one parameter, one group
            continue
        seen.add(id(p))
        if name.endswith("lm_head.weight") and head_lr:
            head.append(p)
        elif p.ndim == 2 and not name.endswith(("token_embeddings.weight", "lm_head.weight")):
            muon.append(p)
        else:
            adamw.append(p)
    groups = [
        {"params": muon, "kind": "muon", "lr": muon_lr, "lr_scale": muon_lr / lr},
        {"params": adamw, "kind": "adamw", "lr": lr, "lr_scale": 1.0},
    ]
    if head:
        groups.append({"params": head, "kind": "adamw", "lr": head_lr, "lr_scale": head_lr / lr})
    return [g for g in groups if g["params"]]


def _adamw_update(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    lr: Tensor,
    step: Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> None:
    """The AdamW arithmetic of `AdamW.step` with lr and step as 0-d tensors (for `torch.compile`)."""
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step).sqrt()
    step_size = lr / bias_correction1
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        p.mul_(1 - lr * weight_decay)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        p.sub_(step_size * m / (v.sqrt() / bias_correction2_sqrt + eps))


_compiled_adamw_update = None


def _compiled_update():
    """`_adamw_update` compiled once per process (on first use, so importing this module stays cheap)."""
    global _compiled_adamw_update
    if _compiled_adamw_update is None:
        _compiled_adamw_update = torch.compile(_adamw_update, fullgraph=True, dynamic=False)
    return _compiled_adamw_update


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
