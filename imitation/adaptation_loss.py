"""Learned adaptation losses: a scalar computed from the policy's per-frame features on a video alone.

They are trained only through the MAML meta-gradient (see ``imitation.maml``), which needs second order:
with first-order MAML their weights get exactly zero gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from imitation.layers import ChannelNorm
from imitation.policy import PolicyOutput

LOSS_KINDS = ("temporal", "linear")


@dataclass(frozen=True)
class AdaptationLossConfig:
    """The learned loss. Defaults follow DAML: two k=10, 32-filter temporal convs, then a k=1 conv to 7 outputs."""

    kind: str = "temporal"  # "temporal" (1-D conv net over time) or "linear" (ablation: per-frame linear map)
    channels: int = 32  # filters of each temporal conv layer
    kernel_size: int = 10  # temporal extent (frames) of each conv layer
    layers: int = 2  # temporal conv layers before the k=1 output conv
    outputs: int = 7  # channels whose mean square is the loss
    norm: str = "layer"  # normalisation after each temporal conv: "layer" (no scale) or "group"
    scale: float = 1.0  # multiplies the mean of squares

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"kind must be one of {LOSS_KINDS}, got {self.kind!r}")


class TemporalConvLoss(nn.Module):
    """(..., T, F) features -> scalar: [conv1d(k) -> norm -> ReLU] x layers -> conv1d(1) -> mean of squares."""

    def __init__(self, feature_dim: int, cfg: AdaptationLossConfig = AdaptationLossConfig()) -> None:
        super().__init__()
        self.scale = cfg.scale
        blocks: list[nn.Module] = []
        channels = feature_dim
        for _ in range(cfg.layers):
            blocks += [
                # Explicit "same" padding: torch's padding="same" copies the input for even kernels.
                nn.ConstantPad1d(((cfg.kernel_size - 1) // 2, cfg.kernel_size // 2), 0.0),
                nn.Conv1d(channels, cfg.channels, cfg.kernel_size),
                ChannelNorm(cfg.channels, cfg.norm),
                nn.ReLU(),
            ]
            channels = cfg.channels
        blocks.append(nn.Conv1d(channels, cfg.outputs, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, features: Tensor) -> Tensor:
        x = features.reshape(-1, *features.shape[-2:]).transpose(1, 2)  # (N, F, T)
        return self.scale * self.net(x).square().mean()


class LinearFeatureLoss(nn.Module):
    """(..., T, F) features -> scalar: mean of squares of a learned linear map of each frame's features."""

    def __init__(self, feature_dim: int, cfg: AdaptationLossConfig = AdaptationLossConfig(kind="linear")) -> None:
        super().__init__()
        self.scale = cfg.scale
        self.linear = nn.Linear(feature_dim, cfg.outputs)

    def forward(self, features: Tensor) -> Tensor:
        return self.scale * self.linear(features).square().mean()


def build_adaptation_loss(feature_dim: int, cfg: AdaptationLossConfig = AdaptationLossConfig()) -> nn.Module:
    return TemporalConvLoss(feature_dim, cfg) if cfg.kind == "temporal" else LinearFeatureLoss(feature_dim, cfg)


class VideoAdaptationLoss(nn.Module):
    """Inner loss for ``MetaLearner``: the learned loss applied to the features of a policy's video pass."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, output: PolicyOutput) -> Tensor:
        return self.net(output.features)
