"""How a video adapts the policy, from the policy's per-frame features on the video alone.

The learned adaptation losses (``temporal``, ``linear``) give a scalar whose gradient step adapts the policy
(DAML); they are trained only through the MAML meta-gradient (see ``imitation.maml``), which needs second
order: with first-order MAML their weights get exactly zero gradient. The ``encoder`` kind is the black-box
baseline: the same temporal convolutions read the same features and output the policy's bias-transform vector
directly, with no loss and no gradient step (``imitation.video_conditioned``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from imitation.layers import ChannelNorm
from imitation.policy import PolicyOutput
from imitation.target_reader import TargetMatchLoss, TargetReader, video_maps

LOSS_KINDS = ("temporal", "linear", "encoder")


@dataclass(frozen=True)
class AdaptationLossConfig:
    """The learned loss. Defaults follow DAML: two k=10, 32-filter temporal convs, then a k=1 conv to 7 outputs."""

    # "temporal" (1-D conv net over time), "linear" (ablation: per-frame linear map), or "encoder" (black-box
    # baseline: the temporal net's outputs, averaged over time, are the bias-transform vector; `outputs` is ignored)
    kind: str = "temporal"
    channels: int = 32  # filters of each temporal conv layer
    kernel_size: int = 10  # temporal extent (frames) of each conv layer
    layers: int = 2  # temporal conv layers before the k=1 output conv
    outputs: int = 7  # channels whose mean square is the loss
    norm: str = "layer"  # normalisation after each temporal conv: "layer" (no scale) or "group"
    scale: float = 1.0  # multiplies the mean of squares
    # Read which object the video is about and aim the policy's target query at it (needs policy.target_query):
    # DAML adds imitation.target_reader.TargetMatchLoss to the learned loss; the black box maps the read
    # appearance to the query. Add `target_query` to meta.adapt_only for DAML's step to move the query.
    target_match: bool = False
    match_scale: float = 5.0  # initial (meta-learned) weight of DAML's match term, and of the black box's query
    # A second read, for the policy's place query (needs policy.place_query): where the video's object ends,
    # pick_place's box. DAML: a second match term, with a reader of its own (add `place_query` to
    # meta.adapt_only); the black box: a second reader, whose appearance mapped linearly is the place query.
    place_match: bool = False

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"kind must be one of {LOSS_KINDS}, got {self.kind!r}")


def temporal_conv_net(feature_dim: int, cfg: AdaptationLossConfig, outputs: int) -> nn.Sequential:
    """(N, F, T) -> (N, outputs, T): [conv1d(k) -> norm -> ReLU] x layers -> conv1d(1)."""
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
    blocks.append(nn.Conv1d(channels, outputs, 1))
    return nn.Sequential(*blocks)


def _time_last(features: Tensor) -> Tensor:
    """(..., T, F) -> (N, F, T)."""
    return features.reshape(-1, *features.shape[-2:]).transpose(1, 2)


class TemporalConvLoss(nn.Module):
    """(..., T, F) features -> scalar: the mean of squares of ``temporal_conv_net``'s outputs."""

    def __init__(self, feature_dim: int, cfg: AdaptationLossConfig = AdaptationLossConfig()) -> None:
        super().__init__()
        self.scale = cfg.scale
        self.net = temporal_conv_net(feature_dim, cfg, cfg.outputs)

    def forward(self, features: Tensor) -> Tensor:
        return self.scale * self.net(_time_last(features)).square().mean()


class TemporalVideoEncoder(nn.Module):
    """A video pass (``PolicyOutput`` of T frames) -> (embedding_dim,): ``temporal_conv_net``'s outputs averaged
    over time. With ``cfg.target_match`` the next ``query_dim`` entries are instead a linear map of the target
    appearance that a ``TargetReader`` reads from the feature maps (the policy's target query); with
    ``cfg.place_match`` the last ``query_dim`` entries come the same way from a second reader (the place query)."""

    def __init__(self, feature_dim: int, embedding_dim: int, cfg: AdaptationLossConfig = AdaptationLossConfig(kind="encoder"),
                 query_dim: int = 0) -> None:
        super().__init__()
        if cfg.target_match and not query_dim:
            raise ValueError("target_match needs a policy with a target query (policy.target_query=true)")
        if cfg.place_match and not cfg.target_match:
            raise ValueError("the black box's place read (place_match) comes with its target read: set "
                             "adaptation_loss.target_match=true too")
        queries = int(cfg.target_match) + int(cfg.place_match)
        self.net = temporal_conv_net(feature_dim, cfg, embedding_dim - queries * query_dim)
        self.reader = TargetReader(query_dim) if cfg.target_match else None
        self.to_query = nn.Linear(query_dim, query_dim) if cfg.target_match else None
        # A freshly initialised linear map gives a query too small to pick anything out of the robot's view (the
        # softmax over it stays uniform, and so gets no gradient); scaled like DAML's match step, it starts sharp.
        self.query_log_scale = nn.Parameter(torch.tensor(math.log(cfg.match_scale))) if cfg.target_match else None
        self.place_reader = TargetReader(query_dim) if cfg.place_match else None
        self.to_place = nn.Linear(query_dim, query_dim) if cfg.place_match else None
        self.place_log_scale = nn.Parameter(torch.tensor(math.log(cfg.match_scale))) if cfg.place_match else None

    def forward(self, output: PolicyOutput) -> Tensor:
        features = output.features
        if features.dim() != 2:
            raise ValueError(f"the encoder reads one video's (T, F) features, got shape {tuple(features.shape)}")
        parts = [self.net(_time_last(features)).mean(dim=-1)[0]]
        if self.reader is not None:
            parts.append(_query_from(self.reader, self.to_query, self.query_log_scale, video_maps(output)))
        if self.place_reader is not None:
            parts.append(_query_from(self.place_reader, self.to_place, self.place_log_scale, video_maps(output)))
        return torch.cat(parts)


def _query_from(reader: TargetReader, to_query: nn.Linear, log_scale: Tensor, maps: Tensor) -> Tensor:
    """The black box's query: a scaled linear map of the appearance that ``reader`` reads from a video's maps."""
    _, appearance = reader(maps)
    return log_scale.exp() * to_query(appearance)


class LinearFeatureLoss(nn.Module):
    """(..., T, F) features -> scalar: mean of squares of a learned linear map of each frame's features."""

    def __init__(self, feature_dim: int, cfg: AdaptationLossConfig = AdaptationLossConfig(kind="linear")) -> None:
        super().__init__()
        self.scale = cfg.scale
        self.linear = nn.Linear(feature_dim, cfg.outputs)

    def forward(self, features: Tensor) -> Tensor:
        return self.scale * self.linear(features).square().mean()


def build_adaptation_loss(feature_dim: int, cfg: AdaptationLossConfig = AdaptationLossConfig()) -> nn.Module:
    """A learned loss (``temporal`` or ``linear``); the ``encoder`` kind is built by ``build_imitation_learner``."""
    if cfg.kind == "encoder":
        raise ValueError("kind='encoder' is not a loss: build it with imitation.bc.build_imitation_learner")
    return TemporalConvLoss(feature_dim, cfg) if cfg.kind == "temporal" else LinearFeatureLoss(feature_dim, cfg)


class VideoAdaptationLoss(nn.Module):
    """Inner loss for ``MetaLearner``: the learned loss applied to the features of a policy's video pass, plus the
    target match term and the place match term (``TargetMatchLoss``) where there are."""

    def __init__(self, net: nn.Module, match: TargetMatchLoss | None = None, place_match: TargetMatchLoss | None = None) -> None:
        super().__init__()
        self.net, self.match, self.place_match = net, match, place_match

    def forward(self, output: PolicyOutput) -> Tensor:
        loss = self.net(output.features)
        for term in (self.match, self.place_match):
            if term is not None:
                loss = loss + term(output)
        return loss
