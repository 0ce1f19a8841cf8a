"""Vision policy: conv trunk -> spatial soft-argmax feature points -> [points, state, bias transform] -> FC -> action."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imitation.layers import NORM_KINDS, ChannelNorm, spatial_soft_argmax


@dataclass(frozen=True)
class PolicyConfig:
    """Architecture of the policy. The defaults (~98k parameters) suit 64x64 images on a CPU."""

    image_size: tuple[int, int] = (64, 64)  # (height, width) of the uint8 RGB input frames
    conv_filters: tuple[int, ...] = (16, 32, 32)  # output channels of each conv layer
    conv_kernel: int = 5  # square kernel size of every conv layer ("same" padding)
    conv_strides: tuple[int, ...] = (2, 2, 2)  # one stride per conv layer
    norm: str = "layer"  # "layer" (no scale, as MIL/DAML) or "group" (GroupNorm); never BatchNorm
    norm_groups: int = 8  # groups for norm="group"
    fc_sizes: tuple[int, ...] = (200, 200)  # hidden fully connected layers; the last one gives the features
    bias_transform_dim: int = 10  # learned, zero-initialised vector concatenated to the first FC input
    # A linear head predicts, from the feature points and the bias transform, where the effector ends the episode
    # (MIL's `learn_final_eept`); the prediction joins the first FC input. Trained by the outer loss
    # (BCLossConfig.goal_weight). From the first frames only the adapted bias transform can know the answer,
    # so this loss asks the inner step for the target, where behaviour cloning alone can read it off the arm.
    goal_prediction: bool = False
    # A learned query vector (one value per channel of the last conv layer) scores every position of the last
    # feature map by its dot product with the query; the softmax-expected (x, y) of those scores joins the feature
    # points. Adapting the query (meta.adapt_only with `target_query`) re-aims this point at another appearance:
    # "go to what looks like the thing in the video", where the layers after the soft-argmax can only reweigh
    # fixed points, one per channel.
    target_query: bool = False
    # A linear head reads the target's hue, as (cos, sin), off the target query (needs target_query). Trained by the
    # outer loss against the task spec's label (BCLossConfig.hue_weight), it asks whatever sets the query (the
    # adaptation step, or the black-box encoder) for *which* object the video is about: supervised probes found the
    # read-and-match of imitation.target_reader learned with this auxiliary label and not without it.
    hue_prediction: bool = False
    # A head maps the target query's soft-argmax point to where the target object is on the table (x, y, z), at
    # every frame (needs target_query); it is linear in (u, v, u^2, uv, v^2) of the point, which fits the camera's
    # perspective from the table to the image to 0.5 mm (a linear map misses by up to 2 cm). Trained by the outer
    # loss against the demo's recorded positions (BCLossConfig.position_weight), it asks the adapted query to *find*
    # the object the video is about in the robot's view. The goal head ties the point to the target only where the
    # effector ends at the target (reach); in push it ends at the goal, and there the point was found to locate
    # nothing (launch.probe_query).
    target_position: bool = False
    # A second learned query, for *where to put* the target (pick_place's box): scored like the target query, its
    # soft-argmax point joins the end of the first FC input and of the goal head's input (so a model trained
    # without it can be grown into one with it: imitation.checkpoint.grow_into). DAML's inner step aims it at what
    # the video's object ends in (AdaptationLossConfig.place_match, meta.adapt_only with `place_query`), and the
    # outer loss tells it where that is (BCLossConfig.place_map_weight).
    place_query: bool = False
    # The target query's point on the episode's *first* frame joins the end of the first FC input, beside the current
    # frame's: a memory of where the target was before the arm came near it. With the arm at the target the current
    # point wanders along the camera's depth axis (launch.probe_query: reach's shipped model, 1.9 cm x error on the
    # first frame, 5.0 cm over the last quarter). A sequence's first frame is its first along the last leading
    # dimension of the inputs (time); one observation at a time, the actor passes the episode's first with it
    # (imitation.rollout.Rollout.actor). Needs target_query. On reach it helped with demos recorded under DART noise
    # (collect's demo_noise) and hurt without; with seed=1 the run never learned the video read (docs/results.md).
    query_anchor: bool = False
    # The last feature map averaged under the target query's softmax (one value per channel) joins the end of the first
    # FC input: what the map holds where the query looks, not only where that is. The query's point is 2-D; the object's
    # size and height, and the fingers around it, are not in it, and pick_place's missed grasps come 1-2 cm off along
    # the camera's depth axis, where a point on the image cannot tell a taller object from a nearer one
    # (docs/results.md). Needs target_query.
    query_glimpse: bool = False
    # The robot camera's depth under the target query joins the end of the first FC input: the softmax-expected
    # (z, z u, z v) over the last map's cells, with z the cell's depth (levels centred at DEPTH_CENTRE, and
    # depth_unit_levels of them a unit) and (u, v) its image coordinates in [-1, 1]. Through a pinhole camera the
    # point a pixel sees is affine in (z, z u, z v), so the first FC layer can hold where the target is in the
    # robot's frame, and with the state where it is from the effector: what the 2-D point alone cannot tell along
    # the camera's depth axis, where pick_place's missed grasps close 1-2 cm off (docs/results.md). The robot's
    # images then carry the depth levels (envs.core.encode_depth) as a fourth channel; a video has none (its fourth
    # channel is 0, and these inputs with it). Needs target_query.
    query_depth: bool = False
    # Depth levels (4 mm each) per unit of those inputs. Under Adam a weight moves about as far per step whatever its
    # input's scale, so an input k times larger is learned about k times faster: a knob for inputs grown into a
    # trained model (their weights start at 0). At 2 (4x) their columns grew about 3x faster in session 30, and still
    # stayed small beside the others (docs/results.md).
    depth_unit_levels: float = 8.0
    state_dim: int = 11  # robot state: ee position (3) + gripper opening (1) + 7 joint positions
    action_dim: int = 4  # ee velocity (3) + gripper command (1, > 0 open)

    def __post_init__(self) -> None:
        if len(self.conv_filters) != len(self.conv_strides):
            raise ValueError(f"conv_filters {self.conv_filters} and conv_strides {self.conv_strides} differ in length")
        if self.norm not in NORM_KINDS:
            raise ValueError(f"norm must be one of {NORM_KINDS}, got {self.norm!r}")
        if not self.fc_sizes:
            raise ValueError("fc_sizes needs at least one hidden layer (its activations are the features)")
        if self.hue_prediction and not self.target_query:
            raise ValueError("hue_prediction reads the target query: set target_query=true too")
        if self.target_position and not self.target_query:
            raise ValueError("target_position reads the target query's point: set target_query=true too")
        if self.query_anchor and not self.target_query:
            raise ValueError("query_anchor keeps the target query's first point: set target_query=true too")
        if self.query_glimpse and not self.target_query:
            raise ValueError("query_glimpse reads the map under the target query: set target_query=true too")
        if self.query_depth and not self.target_query:
            raise ValueError("query_depth reads the depth under the target query: set target_query=true too")

    @property
    def image_channels(self) -> int:
        """Channels of the robot's images: RGB, and the camera's depth levels with query_depth."""
        return 4 if self.query_depth else 3


# About the MIL/DAML pushing network, at the size those papers used; meant for a GPU.
GPU_POLICY = PolicyConfig(
    image_size=(128, 128),
    conv_filters=(32, 32, 32, 32),
    conv_strides=(2, 2, 2, 1),
    fc_sizes=(200, 200, 200),
    bias_transform_dim=20,
)


# The parameters after the conv trunk: the set an ANIL-style inner step adapts (MetaConfig.adapt_only).
POLICY_HEAD = ("bias_transform", "fc", "head")


GOAL_DIM = 3  # the predicted final effector position (x, y, z), metres
HUE_DIM = 2  # the target's hue angle as (cos, sin)
POSITION_DIM = 3  # the target object's centre (x, y, z), metres
QUADRATIC_DIM = 5  # (u, v, u^2, uv, v^2) of a point
DEPTH_DIM = 3  # (z, z u, z v) under the target query
# The depth level (envs.core.encode_depth: 4 mm each from 0.3 m) the policy reads as 0: 0.62 m, about where the
# objects lie (PolicyConfig.depth_unit_levels scales it).
DEPTH_CENTRE = 80.0


def quadratic(points: Tensor) -> Tensor:
    """(u, v, u^2, uv, v^2) of (..., 2) image points: a map linear in these undoes a camera's perspective on a plane."""
    u, v = points[..., :1], points[..., 1:]
    return torch.cat([u, v, u * u, u * v, v * v], dim=-1)


class PolicyOutput(NamedTuple):
    actions: Tensor  # (..., action_dim)
    features: Tensor  # (..., fc_sizes[-1]): last hidden layer, the input of the learned adaptation loss
    goal: Tensor | None = None  # (..., 3): predicted final effector position; None without cfg.goal_prediction
    # With cfg.target_query (else None): the last conv layer's map (..., C, h, w), which a learned adaptation loss
    # may read (imitation.target_reader), and the query's scores over it (..., h, w) before their softmax.
    feature_map: Tensor | None = None
    query_logits: Tensor | None = None
    target_hue: Tensor | None = None  # (..., 2): the hue read off the target query; None without cfg.hue_prediction
    target_position: Tensor | None = None  # (..., 3): where the query point puts the target; None without cfg.target_position
    place_logits: Tensor | None = None  # (..., h, w): the place query's scores over the last map; None without cfg.place_query


def _first_of_sequence(points: Tensor, lead: torch.Size) -> Tensor:
    """(N, 2) points of frames with leading dims `lead` -> for each frame, its sequence's first point (N, 2): the
    sequences run along the last leading dimension (one frame without leading dims is its own first)."""
    if not lead:
        return points
    sequences = points.reshape(*lead, points.shape[-1])
    return sequences[..., :1, :].expand_as(sequences).reshape(points.shape)


def _query(feature_map: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
    """(N, C, h, w) map and a (C,) query -> its scores (N, h, w) at every position, and their soft-argmax (N, 2)."""
    scores = torch.einsum("nchw,c->nhw", feature_map, query)
    return scores, spatial_soft_argmax(scores.unsqueeze(1), torch.ones((), dtype=scores.dtype))


def depth_cells(levels: Tensor, size: tuple[int, int], levels_per_unit: float) -> Tensor:
    """(N, H, W) depth levels -> (N, 3, h, w): (z, z u, z v) of every cell of an (h, w) map, z the cells' mean depth
    (from DEPTH_CENTRE, `levels_per_unit` levels a unit) and (u, v) their coordinates in [-1, 1]; 0 where there is
    no depth."""
    z = (levels - DEPTH_CENTRE) / levels_per_unit * (levels > 0)
    z = F.adaptive_avg_pool2d(z.unsqueeze(1), size)
    us = torch.linspace(-1.0, 1.0, size[1], dtype=z.dtype, device=z.device)
    vs = torch.linspace(-1.0, 1.0, size[0], dtype=z.dtype, device=z.device).unsqueeze(-1)
    return torch.cat([z, z * us, z * vs], dim=1)


def map_under_query(feature_map: Tensor, scores: Tensor) -> Tensor:
    """(N, C, h, w) map and a query's (N, h, w) scores -> (N, C): the map's mean under the scores' softmax."""
    attention = torch.softmax(scores.flatten(1), dim=-1)
    return torch.einsum("ncp,np->nc", feature_map.flatten(2), attention)


class Policy(nn.Module):
    """Maps uint8 frames (..., H, W, 3; 4 with query_depth) and robot states (..., state_dim) to actions and features.

    Any number of leading dimensions is accepted (e.g. (B, T) or (T,)); frames are converted to the
    parameters' dtype on their own device, so data can stay uint8 on the host until the model needs it.
    """

    def __init__(self, cfg: PolicyConfig = PolicyConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        channels = 3
        for filters, stride in zip(cfg.conv_filters, cfg.conv_strides):
            layers += [
                nn.Conv2d(channels, filters, cfg.conv_kernel, stride, padding=cfg.conv_kernel // 2),
                ChannelNorm(filters, cfg.norm, cfg.norm_groups),
                nn.ReLU(),
            ]
            channels = filters
        self.trunk = nn.Sequential(*layers)
        self.softmax_temperature = nn.Parameter(torch.ones(()))
        self.bias_transform = nn.Parameter(torch.zeros(cfg.bias_transform_dim))
        self.target_query = nn.Parameter(torch.zeros(channels)) if cfg.target_query else None
        points_dim = 2 * channels + (2 if cfg.target_query else 0)
        place_dim = 2 if cfg.place_query else 0
        goal_dim = GOAL_DIM if cfg.goal_prediction else 0
        self.goal = nn.Linear(points_dim + cfg.bias_transform_dim + place_dim, GOAL_DIM) if cfg.goal_prediction else None
        self.hue = nn.Linear(channels, HUE_DIM) if cfg.hue_prediction else None
        self.locate = nn.Linear(QUADRATIC_DIM, POSITION_DIM) if cfg.target_position else None
        anchor_dim = 2 if cfg.query_anchor else 0
        glimpse_dim = channels if cfg.query_glimpse else 0
        depth_dim = DEPTH_DIM if cfg.query_depth else 0
        sizes = (points_dim + cfg.state_dim + cfg.bias_transform_dim + goal_dim + place_dim + anchor_dim + glimpse_dim
                 + depth_dim, *cfg.fc_sizes)
        self.fc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(sizes[-1], cfg.action_dim)
        # Registered last: the adapted parameters (and so MetaLearner's inner lrs) keep their order with one more at
        # the end, which a model without it grows into (imitation.checkpoint.grow_into).
        self.place_query = nn.Parameter(torch.zeros(channels)) if cfg.place_query else None

    @property
    def feature_dim(self) -> int:
        return self.cfg.fc_sizes[-1]

    def forward(self, images: Tensor, states: Tensor) -> PolicyOutput:
        self._check_shapes(images, states)
        lead = images.shape[:-3]
        dtype = self.head.weight.dtype
        # NCHW in memory: a permuted (channels-last) input would make the first conv output channels-last, and
        # every reshape of it in the norm (and in its derivatives) a copy.
        x = images.reshape(-1, *images.shape[-3:]).permute(0, 3, 1, 2)
        x = x.to(dtype, memory_format=torch.contiguous_format)
        feature_map = self.trunk(x[:, :3] / 255.0)
        points = spatial_soft_argmax(feature_map, self.softmax_temperature)
        scores = query_point = None
        if self.target_query is not None:
            scores, query_point = _query(feature_map, self.target_query)
            points = torch.cat([points, query_point], dim=-1)
        # without a place query its point is (N, 0): the inputs below are then exactly those of a policy without it
        place_scores, place = (None, points[:, :0]) if self.place_query is None else _query(feature_map, self.place_query)
        bias = self.bias_transform.expand(points.shape[0], -1)
        inputs = [points, states.reshape(-1, self.cfg.state_dim).to(dtype), bias]
        goal = None
        if self.goal is not None:
            goal = self.goal(torch.cat([points, bias, place], dim=-1))
            inputs.append(goal)
        anchor = _first_of_sequence(query_point, lead) if self.cfg.query_anchor else points[:, :0]
        glimpse = map_under_query(feature_map, scores) if self.cfg.query_glimpse else points[:, :0]
        depth = (map_under_query(depth_cells(x[:, 3], feature_map.shape[-2:], self.cfg.depth_unit_levels), scores)
                 if self.cfg.query_depth else points[:, :0])
        h = torch.cat([*inputs, place, anchor, glimpse, depth], dim=-1)
        for layer in self.fc:
            h = F.relu(layer(h))
        actions = self.head(h)
        hue = None if self.hue is None else self.hue(self.target_query).expand(*lead, HUE_DIM)
        position = None if self.locate is None else self.locate(quadratic(query_point)).reshape(*lead, POSITION_DIM)
        return PolicyOutput(actions.reshape(*lead, -1), h.reshape(*lead, -1),
                            None if goal is None else goal.reshape(*lead, -1),
                            None if scores is None else feature_map.reshape(*lead, *feature_map.shape[1:]),
                            None if scores is None else scores.reshape(*lead, *scores.shape[1:]), hue, position,
                            None if place_scores is None else place_scores.reshape(*lead, *place_scores.shape[1:]))

    def video_inputs(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """Model inputs for a video pass: the frames and an all-zero robot state (videos carry none, as in DAML); for
        a policy that reads depth, a fourth channel of 0 (a video has no depth)."""
        zeros = torch.zeros(*video.shape[:-3], self.cfg.state_dim, device=video.device)
        if self.cfg.query_depth:
            video = torch.cat([video, torch.zeros_like(video[..., :1])], dim=-1)
        return video, zeros

    def _check_shapes(self, images: Tensor, states: Tensor) -> None:
        expected = (*self.cfg.image_size, self.cfg.image_channels)
        if tuple(images.shape[-3:]) != expected:
            raise ValueError(f"images end in {tuple(images.shape[-3:])}, the policy config expects {expected}")
        if images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8 (converted on the device by the policy), got {images.dtype}")
        if states.shape[-1] != self.cfg.state_dim or states.shape[:-1] != images.shape[:-3]:
            raise ValueError(
                f"states {tuple(states.shape)} do not match images {tuple(images.shape)} "
                f"with state_dim={self.cfg.state_dim}"
            )
