"""Reading a demonstration's target from the video, for a policy with a target query (PolicyConfig.target_query).

Which object a video is about shows in two frames: in the last one the demonstrator's hand is at the target, and
in the first one the target is still unoccluded. ``TargetReader`` scores every position of the policy's last
feature map from those two frames (a 1x1 conv over both maps' channels) and pools the first frame's features with
the softmax of the scores: (where the demonstration ends, what the scene looked like there).

The policy's target query finds an appearance in the robot's view by a dot product. Two ways to set it:
- DAML (``TargetMatchLoss``, a term of the learned adaptation loss): the cross-entropy between the reader's
  weights and the query's softmax over the video's first frame. Its gradient with respect to the query is
  (features the query picks now - features where the hand ends), so the inner step moves the query towards the
  target's appearance;
- the black box (``imitation.video_conditioned``): a linear map of the pooled appearance *is* the query.

Supervised probes on reach data (``launch/probe_goal.py --head match``) found that feature points concatenated into
fully connected layers do not learn this match, and that the explicit read-and-match learns it when an auxiliary
loss asks for the target's hue during training (``PolicyConfig.hue_prediction``), and not without.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from imitation.policy import PolicyOutput


class TargetReader(nn.Module):
    """(T, C, h, w) feature maps of one video -> (weights (h*w,) of where it ends, appearance (C,) there at t=0)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.where = nn.Conv2d(2 * channels, 1, 1)

    def forward(self, feature_maps: Tensor) -> tuple[Tensor, Tensor]:
        if feature_maps.dim() != 4:
            raise ValueError(f"the reader takes one video's (T, C, h, w) feature maps, got shape {tuple(feature_maps.shape)}")
        first, last = feature_maps[0], feature_maps[-1]
        weights = torch.softmax(self.where(torch.cat([first, last]).unsqueeze(0)).flatten(), dim=0)
        return weights, first.flatten(1) @ weights


def video_maps(output: PolicyOutput) -> Tensor:
    """The feature maps of a video pass, with an error that says how to get them."""
    if output.feature_map is None:
        raise ValueError("reading the target from a video needs the policy's feature maps: set policy.target_query=true")
    return output.feature_map


QUERY_SCORES = ("query_logits", "place_logits")  # the PolicyOutput fields a match loss may aim: target or place query


class TargetMatchLoss(nn.Module):
    """``scale`` x cross-entropy from the query's softmax over the video's first frame to the reader's weights.

    ``scores`` names the query it aims: the target query (``query_logits``) or the place query (``place_logits``),
    each with a reader of its own, which meta-training teaches to find the object or where it ends.
    """

    def __init__(self, channels: int, scale: float, scores: str = "query_logits") -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"the match loss scale must be > 0, got {scale}")
        if scores not in QUERY_SCORES:
            raise ValueError(f"scores must be one of {QUERY_SCORES}, got {scores!r}")
        self.scores = scores
        self.reader = TargetReader(channels)
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))  # meta-learned: the step the query takes

    def forward(self, output: PolicyOutput) -> Tensor:
        weights, _ = self.reader(video_maps(output))
        log_query = torch.log_softmax(getattr(output, self.scores)[0].flatten(), dim=0)
        return self.log_scale.exp() * -(weights * log_query).sum()
