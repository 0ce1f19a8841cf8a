"""Imitation-specific pieces of the meta-learner: behaviour-cloning outer loss, meta-batches, the assembled learner."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from envs.core import ROBOT_CAMERA
from imitation.adaptation_loss import (AdaptationLossConfig, TemporalVideoEncoder, VideoAdaptationLoss,
                                       build_adaptation_loss)
from imitation.layers import init_parameters
from imitation.maml import MetaBatch, MetaConfig, MetaLearner
from imitation.policy import Policy, PolicyConfig, PolicyOutput
from imitation.target_reader import TargetMatchLoss
from imitation.video_conditioned import VideoConditionedLearner, conditioned_sizes

GRIPPER_LOSSES = ("bce", "mse")
EFFECTOR_POSITION = slice(0, 3)  # the effector's xyz in the robot state (envs.robot: position, gripper, joints)
QUERY_MAP_STD = 1.0  # cells of the last feature map: the spread of the query-map label around the target's centre


@dataclass(frozen=True)
class BCLossConfig:
    """Outer loss: behaviour cloning on the robot demo of the task."""

    velocity_weight: float = 1.0  # weight of the MSE on the xyz velocity (MIL pushing used 50)
    gripper_weight: float = 1.0  # weight of the gripper term
    # "bce": the gripper output is a logit of "open" (the env opens for a command > 0, so its sign is the
    # action) trained with BCE on (expert command > 0); "mse": regress the expert command like the velocity.
    gripper_loss: str = "bce"
    # Weight of the MSE (m^2) between the policy's predicted final effector position at every frame and where the
    # demo's effector ended (only for a policy with goal_prediction). 10: a 5 cm miss costs 0.025, about the BC
    # loss of a trained policy.
    goal_weight: float = 10.0
    # Weight of the MSE between the hue the policy reads off its target query and the target's (cos, sin) hue label
    # (only for a policy with hue_prediction, and only where the label is known: in meta-training).
    hue_weight: float = 1.0
    # Weight of the MSE (m^2) between where the policy's target query puts the target at every frame and where the
    # demo recorded it (only for a policy with target_position, and only where the label is known: in
    # meta-training). 10, as the goal term: a 5 cm miss costs 0.025.
    position_weight: float = 10.0
    # Weight of the KL divergence, at every frame, from a Gaussian (std QUERY_MAP_STD cells) around the cell where the
    # target's recorded centre appears in the robot's view to the target query's softmax over the last feature map
    # (only for a policy with target_query, and only where the label is known: in meta-training). It tells the
    # adapted query where the target is cell by cell, which a label on the query's soft-argmax point does not: that
    # one is met as well by a point that never moves from the positions' mean. 0 = off. 1: a query that splits its
    # mass between two candidates pays about log 2 = 0.69 more than one on the target, several times the BC loss.
    query_map_weight: float = 0.0
    # The same divergence for the place query (only for a policy with place_query), around where the target's centre
    # is at the demo's last frame (in pick_place, inside its box), at every frame. 0 = off.
    place_map_weight: float = 0.0
    # Weight of the velocity and gripper terms on the demo's grasp frames, against 1 on the others: the
    # `grasp_frames` frames (of those the loader keeps) that end with the first one whose gripper command closes.
    # The grasp is a few frames of a demo's dozens, and it is where pick_place's policy fails (docs/results.md: its
    # first close comes 2-3 cm off the object); this gives those frames more of the loss. 1 = off (every frame alike).
    grasp_weight: float = 1.0
    grasp_frames: int = 3

    def __post_init__(self) -> None:
        if self.gripper_loss not in GRIPPER_LOSSES:
            raise ValueError(f"gripper_loss must be one of {GRIPPER_LOSSES}, got {self.gripper_loss!r}")
        if self.grasp_weight < 0 or self.grasp_frames < 1:
            raise ValueError(f"grasp_weight must be >= 0 and grasp_frames >= 1, got {self.grasp_weight} and "
                             f"{self.grasp_frames}")


class BehaviourCloningLoss(nn.Module):
    """``(PolicyOutput, expert actions (..., T, 4), final effector position (..., 3)[, target hue (..., 2)[, target
    positions (..., T, 3)]]) -> scalar``.

    Velocity MSE plus a gripper BCE or MSE term, plus the goal term when the policy predicts a goal, plus the hue and
    position terms when the policy predicts the target's hue or position and the label is given.
    """

    def __init__(self, cfg: BCLossConfig = BCLossConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        # The robot camera's (square-image) clip matrix: where a recorded position lies in the policy's view.
        clip = torch.as_tensor(ROBOT_CAMERA.clip_matrix(1, 1), dtype=torch.float32)
        self.register_buffer("robot_clip", clip, persistent=False)

    def forward(self, output: PolicyOutput, actions: Tensor, final_effector: Tensor, target_hue: Tensor | None = None,
                target_positions: Tensor | None = None) -> Tensor:
        predicted = output.actions
        actions = actions.to(predicted.dtype)
        velocity = (predicted[..., :3] - actions[..., :3]).square().mean(-1)
        if self.cfg.gripper_loss == "bce":
            gripper = F.binary_cross_entropy_with_logits(predicted[..., 3], (actions[..., 3] > 0).to(predicted.dtype),
                                                         reduction="none")
        else:
            gripper = (predicted[..., 3] - actions[..., 3]).square()
        per_frame = self.cfg.velocity_weight * velocity + self.cfg.gripper_weight * gripper
        if self.cfg.grasp_weight != 1.0:
            per_frame = per_frame * grasp_frame_weights(actions[..., 3], self.cfg.grasp_weight, self.cfg.grasp_frames)
        loss = per_frame.mean()
        if output.goal is not None:
            loss = loss + self.cfg.goal_weight * _per_frame_mse(output.goal, final_effector)
        if output.target_hue is not None and target_hue is not None:
            loss = loss + self.cfg.hue_weight * _per_frame_mse(output.target_hue, target_hue)
        if output.target_position is not None and target_positions is not None:
            loss = loss + self.cfg.position_weight * F.mse_loss(output.target_position, target_positions.to(predicted.dtype))
        if self.cfg.query_map_weight and output.query_logits is not None and target_positions is not None:
            label = self.query_map_label(target_positions.to(predicted.dtype), *output.query_logits.shape[-2:])
            loss = loss + self.cfg.query_map_weight * query_map_divergence(output.query_logits, label)
        if self.cfg.place_map_weight and output.place_logits is not None and target_positions is not None:
            final = target_positions[..., -1:, :].to(predicted.dtype)  # (..., 1, 3): one label, for every frame
            label = self.query_map_label(final, *output.place_logits.shape[-2:])
            loss = loss + self.cfg.place_map_weight * query_map_divergence(output.place_logits, label)
        return loss

    def query_map_label(self, positions: Tensor, height: int, width: int) -> Tensor:
        """(..., 3) world positions -> (..., height, width): a Gaussian over the cells around where each appears."""
        cells = map_cells(positions, self.robot_clip.to(positions.dtype), height, width)
        rows = torch.arange(height, dtype=positions.dtype, device=positions.device)
        cols = torch.arange(width, dtype=positions.dtype, device=positions.device)
        squared = ((rows - cells[..., 1:2]) ** 2).unsqueeze(-1) + ((cols - cells[..., 0:1]) ** 2).unsqueeze(-2)
        logits = -squared / (2 * QUERY_MAP_STD**2)
        return torch.softmax(logits.flatten(-2), dim=-1).reshape(logits.shape)


def grasp_frame_weights(gripper_commands: Tensor, weight: float, frames: int) -> Tensor:
    """(..., T) gripper commands (> 0 open) -> (..., T) weights: `weight` on the `frames` frames that end with each
    sequence's first closing command, 1 elsewhere (everywhere in a sequence that never closes)."""
    closed = gripper_commands <= 0
    steps = torch.arange(closed.shape[-1], device=closed.device)
    first = torch.where(closed, steps, closed.shape[-1]).amin(-1, keepdim=True)  # T where it never closes
    grasp = (steps <= first) & (steps > first - frames) & closed.any(-1, keepdim=True)
    return torch.where(grasp, weight, 1.0).to(gripper_commands.dtype)


def map_cells(positions: Tensor, clip: Tensor, height: int, width: int) -> Tensor:
    """(..., 3) world positions -> (..., 2) (column, row) on a (height, width) map of the view, in cells (centres at
    integers), given the camera's clip matrix (as ``Camera.clip_matrix``)."""
    homogeneous = torch.cat([positions, torch.ones_like(positions[..., :1])], dim=-1) @ clip.T
    x, y = (homogeneous[..., :2] / homogeneous[..., 3:]).unbind(-1)
    return torch.stack([(x + 1) / 2 * width - 0.5, (1 - y) / 2 * height - 0.5], dim=-1)


def query_map_divergence(logits: Tensor, label: Tensor) -> Tensor:
    """Mean over frames of KL(label || softmax(logits)), both (..., h, w) over their last two dimensions; the label
    may hold one frame for all (it broadcasts)."""
    log_p = torch.log_softmax(logits.flatten(-2), dim=-1)
    q = label.flatten(-2)
    return (q * (torch.log(q.clamp_min(1e-12)) - log_p)).sum(-1).mean()


def _per_frame_mse(per_frame: Tensor, episode_value: Tensor) -> Tensor:
    """MSE between a (..., T, D) prediction at every frame and one (..., D) value of the whole episode."""
    return F.mse_loss(per_frame, episode_value.to(per_frame.dtype).unsqueeze(-2).expand_as(per_frame))


def imitation_batch(
    policy: Policy, videos: Tensor, demo_images: Tensor, demo_states: Tensor, demo_actions: Tensor,
    target_hues: Tensor | None = None, target_positions: Tensor | None = None,
) -> MetaBatch:
    """A meta-batch from per-task tensors (task first): videos (N,T,H,W,3) uint8, demos (N,T,...) from the reader.

    The video pass gets a zeroed robot state and no targets: adaptation sees frames only. The outer loss gets the
    expert actions, where the demo's effector ended (the goal the policy may predict) and, when given, the target's
    hue label (N, 2) (the hue the policy may read off its target query) and its positions (N, T, 3) (what the
    query's point may locate; given only with the hues, as the outer loss takes its labels in that order).
    """
    if target_positions is not None and target_hues is None:
        raise ValueError("target_positions come after target_hues in the outer loss's arguments: give both")
    hues = () if target_hues is None else (target_hues,)
    positions = () if target_positions is None else (target_positions,)
    return MetaBatch(
        support_inputs=policy.video_inputs(videos),
        support_targets=(),
        query_inputs=(demo_images, demo_states),
        query_targets=(demo_actions, demo_states[:, -1, EFFECTOR_POSITION], *hues, *positions),
    )


def build_imitation_learner(
    policy_cfg: PolicyConfig = PolicyConfig(),
    loss_cfg: AdaptationLossConfig = AdaptationLossConfig(),
    bc_cfg: BCLossConfig = BCLossConfig(),
    meta_cfg: MetaConfig = MetaConfig(),
    *,
    generator: torch.Generator,
) -> MetaLearner:
    """Policy + learned video loss + BC outer loss in one MetaLearner; ``generator`` seeds the initial weights.

    With ``loss_cfg.kind="encoder"``: the black-box baseline, a ``VideoConditionedLearner`` (no loss, no step).
    """
    if loss_cfg.target_match and not policy_cfg.target_query:
        raise ValueError("adaptation_loss.target_match=true aims the policy's target query: set policy.target_query=true too")
    if bc_cfg.query_map_weight and not policy_cfg.target_query:
        raise ValueError("bc.query_map_weight>0 trains the policy's target query: set policy.target_query=true too")
    if loss_cfg.place_match and not policy_cfg.place_query:
        raise ValueError("adaptation_loss.place_match=true aims the policy's place query: set policy.place_query=true too")
    if bc_cfg.place_map_weight and not policy_cfg.place_query:
        raise ValueError("bc.place_map_weight>0 trains the policy's place query: set policy.place_query=true too")
    if loss_cfg.kind == "encoder" and policy_cfg.place_query and not loss_cfg.place_match:
        raise ValueError("the black box (adaptation_loss.kind=encoder) writes the place query from its place read: "
                         "set adaptation_loss.place_match=true too (or policy.place_query=false)")
    policy = init_parameters(Policy(policy_cfg), generator)
    query_dim = policy_cfg.conv_filters[-1] if policy_cfg.target_query else 0
    if loss_cfg.kind == "encoder":
        embedding_dim = sum(conditioned_sizes(policy).values())
        encoder = init_parameters(TemporalVideoEncoder(policy.feature_dim, embedding_dim, loss_cfg, query_dim), generator)
        return VideoConditionedLearner(policy, encoder, BehaviourCloningLoss(bc_cfg), meta_cfg)
    match = TargetMatchLoss(query_dim, loss_cfg.match_scale) if loss_cfg.target_match else None
    channels = policy_cfg.conv_filters[-1]
    place = TargetMatchLoss(channels, loss_cfg.match_scale, "place_logits") if loss_cfg.place_match else None
    inner = VideoAdaptationLoss(build_adaptation_loss(policy.feature_dim, loss_cfg), match, place)
    return MetaLearner(policy, init_parameters(inner, generator), BehaviourCloningLoss(bc_cfg), meta_cfg)
