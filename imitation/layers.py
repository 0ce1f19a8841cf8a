"""Building blocks shared by the policy and the learned adaptation loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
