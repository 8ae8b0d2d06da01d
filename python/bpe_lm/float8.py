"""Float8 matrix multiplies for training (`training.float8 = true`): the tensorwise recipe of torchao's float8
training, written for this model's projections (its own `Linear` and the stacked q/k/v and w1/w3 GEMMs,
which torchao's module swap, made for `nn.Linear`, does not reach).

Each GEMM of a projection's forward and backward runs in float8 through `torch._scaled_mm`, with one scale
per tensor computed from that tensor's current absolute maximum (dynamic scaling): inputs and weights in
e4m3 (more mantissa), the gradient flowing back in e5m2 (more range). The weights themselves stay in their
own dtype (float32 master weights); the float8 copies exist only inside the step. Float8 GEMMs need a GPU
with float8 tensor cores (compute capability 8.9+: Ada, Hopper, Blackwell) for speed; on a CPU `_scaled_mm`
computes the same products slowly, which is how the numerics are tested without one.
"""

from __future__ import annotations

import torch
from torch import Tensor

FORWARD_DTYPE = torch.float8_e4m3fn
BACKWARD_DTYPE = torch.float8_e5m2
# Float8 GEMMs on CUDA need every matrix dimension to be a multiple of this.
DIMENSION_MULTIPLE = 16


def to_float8(t: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """`t` scaled so its largest magnitude is the float8 format's largest, cast; and the inverse scale
    (float32 scalar) that `_scaled_mm` multiplies back. An all-zero tensor keeps scale 1."""
    largest = torch.finfo(dtype).max
    amax = t.detach().abs().amax().float()
    scale = torch.where(amax > 0, largest / amax, torch.ones_like(amax))
    # Row-major, as `_scaled_mm` wants its first operand on CUDA (a no-op for the usual contiguous input).
    scaled = (t.float() * scale).clamp(-largest, largest).to(dtype).contiguous()
    return scaled, scale.reciprocal()


def _column_major(t: Tensor) -> Tensor:
    """The same matrix laid out column by column (what `_scaled_mm` wants for its second operand)."""
    return t.t().contiguous().t()


class _Float8Matmul(torch.autograd.Function):
    """x Wᵀ for x (N, in), W (out, in), with the three GEMMs of forward and backward in float8."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, out_dtype: torch.dtype) -> Tensor:
        x8, x_inv = to_float8(x, FORWARD_DTYPE)
        w8, w_inv = to_float8(weight, FORWARD_DTYPE)
        ctx.save_for_backward(x8, x_inv, w8, w_inv)
        ctx.dtypes = (x.dtype, weight.dtype)
        # w8 is (out, in) row-major, so its transpose is the column-major (in, out) operand.
        return torch._scaled_mm(x8, w8.t(), scale_a=x_inv, scale_b=w_inv, out_dtype=out_dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # grad (N, out)
        x8, x_inv, w8, w_inv = ctx.saved_tensors
        x_dtype, w_dtype = ctx.dtypes
        g8, g_inv = to_float8(grad, BACKWARD_DTYPE)
        grad_x = torch._scaled_mm(g8, _column_major(w8), scale_a=g_inv, scale_b=w_inv, out_dtype=x_dtype)
        grad_w = torch._scaled_mm(
            g8.t().contiguous(), _column_major(x8), scale_a=g_inv, scale_b=x_inv, out_dtype=torch.float32
        )
        return grad_x, grad_w.to(w_dtype), None


def float8_matmul(x: Tensor, weight: Tensor) -> Tensor:
    """x Wᵀ (x (..., in), W (out, in)) in float8, returned in the dtype a plain matmul would give here
    (autocast's where it is on)."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        out_dtype = torch.get_autocast_dtype(device_type)
    else:
        out_dtype = torch.promote_types(x.dtype, weight.dtype)
    flat = x.reshape(-1, x.shape[-1])
    out = _Float8Matmul.apply(flat, weight, out_dtype)
    return out.reshape(*x.shape[:-1], weight.shape[0])


def float8_unsupported(device: torch.device) -> str | None:
    """Why float8 training cannot run on `device`, or None when it can."""
    if not hasattr(torch, "_scaled_mm") or not hasattr(torch, "float8_e4m3fn"):
        return f"this torch ({torch.__version__}) has no float8 matrix multiply"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 9):
            return (
                f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) has no float8 tensor "
                "cores; float8 needs 8.9 or newer (Ada, Hopper, Blackwell)"
            )
    elif device.type != "cpu":
        return f"float8 matrix multiplies run on CUDA (and, slowly, on CPU), not on {device.type}"
    return None
