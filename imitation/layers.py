"""Building blocks shared by the policy and the learned adaptation loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

NORM_KINDS = ("layer", "group")


class ChannelNorm(nn.Module):
    """Stateless normalisation over (channels, *spatial) of an (N, C, ...) tensor.

    ``kind="layer"`` is the original MIL/DAML layer norm: statistics over all of (C, ...) and a learned
    per-channel offset but no scale. ``kind="group"`` is standard GroupNorm (per-group statistics, per-channel
    scale and offset). Neither keeps running statistics, so the module behaves the same inside
    ``functional_call``, ``grad`` and ``vmap`` as outside (BatchNorm would not).
    """

    def __init__(self, channels: int, kind: str = "layer", groups: int = 8, eps: float = 1e-5) -> None:
        super().__init__()
        if kind not in NORM_KINDS:
            raise ValueError(f"norm must be one of {NORM_KINDS}, got {kind!r}")
        if kind == "group" and channels % groups:
            raise ValueError(f"GroupNorm needs channels ({channels}) divisible by groups ({groups})")
        self.groups = 1 if kind == "layer" else groups
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))
        self.weight = nn.Parameter(torch.ones(channels)) if kind == "group" else None

    def forward(self, x: Tensor) -> Tensor:
        # layer_norm over each group's flattened values: F.group_norm cannot run under vmap.
        grouped = x.reshape(x.shape[0], self.groups, -1)
        y = F.layer_norm(grouped, grouped.shape[-1:], eps=self.eps).reshape(x.shape)
        shape = (-1, *[1] * (x.dim() - 2))
        if self.weight is not None:
            y = y * self.weight.reshape(shape)
        return y + self.bias.reshape(shape)


def spatial_soft_argmax(x: Tensor, temperature: Tensor) -> Tensor:
    """Expected (x, y) image coordinates in [-1, 1] of each channel's softmax: (N, C, H, W) -> (N, 2C).

    The output is ordered (x_0, y_0, x_1, y_1, ...), as in the original feature-point layer.
    """
    n, c, h, w = x.shape
    attention = torch.softmax(x.reshape(n, c, h * w) / temperature, dim=-1).reshape(n, c, h, w)
    xs = torch.linspace(-1.0, 1.0, w, dtype=x.dtype, device=x.device)
    ys = torch.linspace(-1.0, 1.0, h, dtype=x.dtype, device=x.device)
    expected_x = (attention.sum(dim=2) * xs).sum(dim=-1)
    expected_y = (attention.sum(dim=3) * ys).sum(dim=-1)
    return torch.stack([expected_x, expected_y], dim=-1).reshape(n, 2 * c)


def init_parameters(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-draw the weights of every Linear/Conv layer in ``module`` from ``generator`` (PyTorch's default scheme).

    Modules draw their initial weights from the global RNG; this makes an initialisation reproducible from an
    explicit generator instead. Norm offsets, the bias transformation etc. keep their constant initial values.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_uniform_(layer.weight, a=5**0.5, generator=generator)
            if layer.bias is not None:
                bound = nn.init._calculate_fan_in_and_fan_out(layer.weight)[0] ** -0.5
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return module


# ----- convolutions with a fast second derivative -------------------------------------------------------------
#
# PyTorch differentiates a convolution's backward (`_convolution_double_backward`) by computing one term, the
# weight gradient from the input gradient's gradient, as a convolution with batch and channels swapped: the
# output gradient becomes a huge kernel (e.g. 50 x 16 x 16), which the CPU (oneDNN) kernels run many times
# slower than the dedicated weight-gradient kernel. Second-order MAML spends ~20% of a CPU meta-step there.
# Here a convolution's backward is itself a Function whose backward is written with the convolution and with
# itself, so derivatives of every order run on the forward and the input/weight-gradient kernels of
# `aten.convolution_backward`. Exact: the forward and first derivative are PyTorch's own calls; both Functions
# work under torch.func (setup_context; the vmap rule is generated from the ops).


def _conv(x: Tensor, weight: Tensor, bias: Tensor | None, geometry: tuple) -> Tensor:
    stride, padding, dilation, groups = geometry
    return torch.convolution(x, weight, bias, stride, padding, dilation, False, [0] * len(stride), groups)


class _Convolution(torch.autograd.Function):
    """``conv(x, weight) + bias``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, geometry: tuple) -> Tensor:
        return _conv(x, weight, bias, geometry)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, _, ctx.geometry = inputs
        ctx.save_for_backward(x, weight)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        needs_x, needs_weight, needs_bias, _ = ctx.needs_input_grad
        grad_x = grad_weight = grad_bias = None
        if needs_x or needs_weight:
            grad_x, grad_weight = _ConvolutionBackward.apply(grad, x, weight, ctx.geometry, (needs_x, needs_weight))
        if needs_bias:
            grad_bias = grad.sum([d for d in range(grad.dim()) if d != 1])
        return grad_x, grad_weight, grad_bias, None


class _ConvolutionBackward(torch.autograd.Function):
    """(input gradient, weight gradient) of ``conv(x, weight)`` given the output gradient; each only if masked.

    Both are bilinear: grad_x(grad, weight) and grad_weight(x, grad). Given their gradients (gg_x, gg_weight):
    d grad = conv(gg_x, weight) + conv(x, gg_weight), d x = grad_x(grad, gg_weight), d weight = grad_weight(gg_x,
    grad), i.e. this Function again with (x, weight) replaced by (gg_x, gg_weight): one kernel call for both.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(grad: Tensor, x: Tensor, weight: Tensor, geometry: tuple, mask: tuple[bool, bool]):
        stride, padding, dilation, groups = geometry
        grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad, x, weight, None, stride, padding, dilation, False, [0] * len(stride), groups, (*mask, False)
        )
        return grad_x, grad_weight

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        grad, x, weight, ctx.geometry, _ = inputs
        ctx.save_for_backward(grad, x, weight)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, gg_x: Tensor | None, gg_weight: Tensor | None):
        grad, x, weight = ctx.saved_tensors
        needs_grad, needs_x, needs_weight, _, _ = ctx.needs_input_grad
        d_grad = d_x = d_weight = None
        if needs_grad:
            terms = [_Convolution.apply(gg_x, weight, None, ctx.geometry)] if gg_x is not None else []
            terms += [_Convolution.apply(x, gg_weight, None, ctx.geometry)] if gg_weight is not None else []
            d_grad = terms[0] + terms[1] if len(terms) == 2 else terms[0] if terms else None
        mask = (needs_x and gg_weight is not None, needs_weight and gg_x is not None)
        if any(mask):
            # An operand whose gradient is masked out only gives its shape: x or weight stand in (an expanded
            # empty tensor, as in torch.nn.grad, would be copied to a contiguous one by the kernel).
            as_x = gg_x if gg_x is not None else x
            as_weight = gg_weight if gg_weight is not None else weight
            d_x, d_weight = _ConvolutionBackward.apply(grad, as_x, as_weight, ctx.geometry, mask)
        return d_grad, d_x, d_weight, None, None


def _geometry(value, dims: int) -> list[int]:
    return [value] * dims if isinstance(value, int) else list(value)


def convolution(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1, groups: int = 1
) -> Tensor:
    """``F.conv1d/2d/3d`` (numeric padding) whose derivatives of every order use the fast conv kernels."""
    dims = weight.dim() - 2
    geometry = (_geometry(stride, dims), _geometry(padding, dims), _geometry(dilation, dims), groups)
    return _Convolution.apply(x, weight, bias, geometry)


_CONV_FUNCTIONS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}


class FastConvDerivatives(TorchFunctionMode):
    """While active, ``F.conv1d/2d/3d`` calls (so every ``nn.Conv*d``) run through ``convolution``.

    Model-agnostic: the model's own modules and weights are unchanged. Calls it cannot take (string padding
    such as ``"same"``, unbatched input) go to PyTorch's function as before.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        dims = _CONV_FUNCTIONS.get(func)
        if dims is not None:
            call = _conv_call(dims, *args, **kwargs)
            if call is not None:
                return convolution(*call)
        return func(*args, **kwargs)


def _conv_call(dims, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # noqa: A002
    if isinstance(padding, str) or input.dim() != dims + 2:
        return None
    return input, weight, bias, stride, padding, dilation, groups
