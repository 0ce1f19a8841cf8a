"""Policy and learned adaptation loss: shapes, dtypes, configuration errors."""

import pytest
import torch
from torch import nn

from imitation.adaptation_loss import AdaptationLossConfig, LinearFeatureLoss, TemporalConvLoss, build_adaptation_loss
from envs.core import ROBOT_CAMERA
from imitation.bc import (BCLossConfig, BehaviourCloningLoss, build_imitation_learner, grasp_frame_weights,
                          imitation_batch)
from imitation.layers import init_parameters, spatial_soft_argmax
from imitation.checkpoint import grow_into
from imitation.policy import (DEPTH_CENTRE, GPU_POLICY, Policy, PolicyConfig, depth_cells, map_under_query,
                              quadratic)


def frames(*lead: int, size: tuple[int, int] = (64, 64), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*lead, *size, 3), dtype=torch.uint8, generator=g)


def test_default_policy_shapes_dtypes_and_size() -> None:
    policy = Policy()
    out = policy(frames(2, 5), torch.randn(2, 5, 11))
    assert out.actions.shape == (2, 5, 4) and out.actions.dtype == torch.float32
    assert out.features.shape == (2, 5, policy.feature_dim)
    assert 80_000 <= sum(p.numel() for p in policy.parameters()) <= 120_000
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in policy.modules())
    assert torch.equal(policy.bias_transform, torch.zeros(10))


def test_policy_accepts_any_leading_dims_and_float64() -> None:
    policy = Policy().double()
    out = policy(frames(7), torch.randn(7, 11))
    assert out.actions.shape == (7, 4) and out.actions.dtype == torch.float64
    single = policy(frames(7)[3], torch.zeros(11))
    assert single.actions.shape == (4,)


def test_video_inputs_zero_the_state() -> None:
    policy = Policy()
    video, state = policy.video_inputs(frames(3, 6))
    assert state.shape == (3, 6, 11) and not state.any()
    assert policy(video, state).features.shape == (3, 6, 200)


def test_goal_prediction_is_trained_by_the_outer_loss() -> None:
    policy = Policy(PolicyConfig(goal_prediction=True)).requires_grad_(False)
    states = torch.randn(2, 5, 11)
    out = policy(frames(2, 5), states)
    assert out.goal.shape == (2, 5, 3) and Policy()(frames(2, 5), states).goal is None
    batch = imitation_batch(policy, frames(2, 5), frames(2, 5), states, torch.randn(2, 5, 4))
    assert torch.equal(batch.query_targets[1], states[:, -1, :3])
    loss = BehaviourCloningLoss()
    actions, final = batch.query_targets
    without_goal = loss(out._replace(goal=None), actions, final)
    exact = out._replace(goal=final.unsqueeze(1).expand(2, 5, 3))
    assert loss(exact, actions, final) == pytest.approx(without_goal.item())
    expected = without_goal + 10.0 * torch.nn.functional.mse_loss(out.goal, exact.goal)
    assert loss(out, actions, final) == pytest.approx(expected.item())


def test_hue_prediction_is_read_off_the_query_and_trained_only_where_the_label_is_given() -> None:
    policy = Policy(PolicyConfig(target_query=True, hue_prediction=True)).requires_grad_(False)
    states, actions = torch.randn(2, 5, 11), torch.randn(2, 5, 4)
    out = policy(frames(2, 5), states)
    assert out.target_hue.shape == (2, 5, 2) and torch.equal(out.target_hue[0, 0], policy.hue(policy.target_query))
    labels = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    batch = imitation_batch(policy, frames(2, 5), frames(2, 5), states, actions, labels)
    assert torch.equal(batch.query_targets[2], labels)
    loss = BehaviourCloningLoss()
    final = batch.query_targets[1]
    without_label = loss(out, actions, final)  # as in adapt_on_demo: no label, no hue term
    assert without_label == pytest.approx(loss(out._replace(target_hue=None), actions, final, labels).item())
    expected = without_label + torch.nn.functional.mse_loss(out.target_hue, labels.unsqueeze(1).expand(2, 5, 2))
    assert loss(out, actions, final, labels) == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="target_query"):
        PolicyConfig(hue_prediction=True)


def test_target_position_is_read_off_the_query_point_and_trained_against_the_recorded_positions() -> None:
    policy = Policy(PolicyConfig(target_query=True, hue_prediction=True, target_position=True)).requires_grad_(False)
    images, states, actions = frames(2, 5), torch.randn(2, 5, 11), torch.randn(2, 5, 4)
    out = policy(images, states)
    scores = out.query_logits.reshape(10, 1, *out.query_logits.shape[-2:])
    point = spatial_soft_argmax(scores, torch.ones(()))
    assert out.target_position.shape == (2, 5, 3)
    torch.testing.assert_close(out.target_position, policy.locate(quadratic(point)).reshape(2, 5, 3))
    hues, positions = torch.randn(2, 2), torch.randn(2, 5, 3)
    batch = imitation_batch(policy, images, images, states, actions, hues, positions)
    assert torch.equal(batch.query_targets[3], positions)
    loss, final = BehaviourCloningLoss(), batch.query_targets[1]
    without_label = loss(out, actions, final, hues)
    expected = without_label + 10.0 * torch.nn.functional.mse_loss(out.target_position, positions)
    assert loss(out, actions, final, hues, positions) == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="give both"):
        imitation_batch(policy, images, images, states, actions, None, positions)
    with pytest.raises(ValueError, match="target_query"):
        PolicyConfig(target_position=True)


def test_grasp_weight_raises_the_cloning_loss_on_the_frames_that_end_with_the_first_close() -> None:
    """Frames 2-4 end with the first close (frame 4); the later closed frames and a sequence that never closes keep
    weight 1, and an error on a grasp frame costs `grasp_weight` times what it costs elsewhere."""
    commands = torch.tensor([[1.0, 1.0, 1.0, 1.0, -1.0, -1.0, 1.0], [1.0] * 7])
    weights = grasp_frame_weights(commands, 5.0, 3)
    assert weights.tolist() == [[1.0, 1.0, 5.0, 5.0, 5.0, 1.0, 1.0], [1.0] * 7]
    actions = torch.zeros(2, 7, 4)
    actions[..., 3] = commands
    exact = torch.where(actions[..., 3:] > 0, 20.0, -20.0).expand(2, 7, 1)  # gripper logits right and sure

    def loss_with_velocity_error_at(frame: int, weight: float) -> float:
        predicted = torch.cat([torch.zeros(2, 7, 3), exact], dim=-1)
        predicted[0, frame, 0] = 0.3
        out = Policy()(frames(2, 7), torch.zeros(2, 7, 11))._replace(actions=predicted)
        return BehaviourCloningLoss(BCLossConfig(grasp_weight=weight))(out, actions, torch.zeros(2, 3)).item()

    plain = loss_with_velocity_error_at(3, 1.0)
    assert plain == pytest.approx(0.3**2 / 3 / 14, rel=1e-4)  # the mean over 14 frames of the 3-dim MSE
    assert loss_with_velocity_error_at(3, 5.0) == pytest.approx(5 * plain, rel=1e-4)
    assert loss_with_velocity_error_at(5, 5.0) == pytest.approx(plain, rel=1e-4)
    with pytest.raises(ValueError, match="grasp_frames"):
        BCLossConfig(grasp_frames=0)


def test_query_map_label_lies_where_the_camera_sees_the_target_and_rewards_a_query_on_it() -> None:
    """The label's peak is the cell the robot camera projects the target into, and the term costs a query peaked on
    that cell less than one peaked on another object's, and about log 2 more when split between the two."""
    loss = BehaviourCloningLoss(BCLossConfig(query_map_weight=1.0))
    target, other = torch.tensor([0.55, 0.12, 0.03]), torch.tensor([0.50, -0.10, 0.03])
    label = loss.query_map_label(target, 16, 16)
    col, row = ROBOT_CAMERA.project(target.numpy(), 16, 16).astype(int)  # the cell holding the projected centre
    assert divmod(int(label.argmax()), 16) == (row, col) and label.sum().item() == pytest.approx(1.0)

    def logits_on(*points: torch.Tensor) -> torch.Tensor:
        return torch.log(sum(loss.query_map_label(p, 16, 16) for p in points) / len(points) + 1e-9)

    def divergence(logits: torch.Tensor) -> float:
        out = Policy(PolicyConfig(target_query=True))(frames(1), torch.zeros(1, 11))._replace(query_logits=logits)
        zeros = torch.zeros(1, 4), torch.zeros(3)
        return (loss(out, *zeros, None, target.unsqueeze(0)) - BehaviourCloningLoss()(out, *zeros)).item()

    on_target, on_other, split = divergence(logits_on(target)), divergence(logits_on(other)), divergence(logits_on(target, other))
    assert on_target < 0.01 and on_other > 5 and split - on_target == pytest.approx(0.69, abs=0.1)
    with pytest.raises(ValueError, match="target_query"):
        build_imitation_learner(PolicyConfig(), bc_cfg=BCLossConfig(query_map_weight=1.0), generator=torch.Generator())


def test_place_query_scores_the_map_and_its_point_enters_only_at_the_end_of_the_inputs() -> None:
    """The place query scores the last feature map as the target query does, and its soft-argmax point reaches the
    actions only through the last two columns of the first FC layer and of the goal head."""
    cfg = PolicyConfig(target_query=True, goal_prediction=True, place_query=True)
    policy = init_parameters(Policy(cfg), torch.Generator().manual_seed(0)).requires_grad_(False)
    images, states = frames(2, 5), torch.randn(2, 5, 11, generator=torch.Generator().manual_seed(1))

    def actions_with_place_query(seed: int) -> torch.Tensor:
        policy.place_query.copy_(torch.randn(32, generator=torch.Generator().manual_seed(seed)))
        out = policy(images, states)
        torch.testing.assert_close(out.place_logits, torch.einsum("btchw,c->bthw", out.feature_map, policy.place_query))
        return out.actions

    assert not torch.allclose(actions_with_place_query(2), actions_with_place_query(3))
    policy.fc[0].weight[:, -2:] = 0
    policy.goal.weight[:, -2:] = 0
    torch.testing.assert_close(actions_with_place_query(2), actions_with_place_query(3), rtol=0, atol=0)
    assert Policy(PolicyConfig(target_query=True))(images, states).place_logits is None


def test_query_anchor_gives_every_frame_its_sequence_first_point() -> None:
    """policy.query_anchor: a frame's actions depend on its sequence's first frame (along the last leading dimension),
    and a frame passed after the first, as a pair, acts as it does inside the whole sequence."""
    policy = init_parameters(Policy(PolicyConfig(target_query=True, query_anchor=True)), torch.Generator().manual_seed(0))
    policy.requires_grad_(False).target_query.normal_(generator=torch.Generator().manual_seed(1))
    images, states = frames(2, 5), torch.randn(2, 5, 11, generator=torch.Generator().manual_seed(2))
    whole = policy(images, states).actions
    pair = policy(images[1, [0, 3]], states[1, [0, 3]]).actions
    torch.testing.assert_close(pair[1], whole[1, 3])
    other_first = images.clone()
    other_first[:, 0] = frames(2, size=(64, 64), seed=5)
    changed = policy(other_first, states).actions
    assert not torch.allclose(changed[:, 1:], whole[:, 1:])  # the later frames see the new first one
    policy.fc[0].weight[:, -2:] = 0  # the anchor enters through the last two inputs of the first FC layer only
    torch.testing.assert_close(policy(other_first, states).actions[:, 1:], policy(images, states).actions[:, 1:])
    with pytest.raises(ValueError, match="target_query"):
        PolicyConfig(query_anchor=True)


def test_place_map_label_lies_where_the_target_ends() -> None:
    """bc.place_map_weight: the place query's label at every frame is where the target is at the demo's last frame
    (in the box), not where it is at that frame."""
    loss = BehaviourCloningLoss(BCLossConfig(place_map_weight=1.0))
    start, end = torch.tensor([0.50, -0.10, 0.03]), torch.tensor([0.55, 0.12, 0.03])
    positions = torch.stack([start, start, end])  # (T=3, 3): picked up, then in the box

    def divergence(at: torch.Tensor) -> float:
        logits = torch.log(loss.query_map_label(at, 16, 16) + 1e-9).expand(3, 16, 16)
        out = Policy(PolicyConfig(target_query=True))(frames(3), torch.zeros(3, 11))._replace(place_logits=logits)
        zeros = torch.zeros(3, 4), torch.zeros(3)
        return (loss(out, *zeros, None, positions) - BehaviourCloningLoss()(out, *zeros)).item()

    assert divergence(end) < 0.01 and divergence(start) > 5
    with pytest.raises(ValueError, match="place_query"):
        build_imitation_learner(PolicyConfig(), bc_cfg=BCLossConfig(place_map_weight=1.0), generator=torch.Generator())
    with pytest.raises(ValueError, match="place_query"):
        build_imitation_learner(PolicyConfig(), AdaptationLossConfig(place_match=True), generator=torch.Generator())
    with pytest.raises(ValueError, match="black box"):
        build_imitation_learner(PolicyConfig(place_query=True), AdaptationLossConfig(kind="encoder"), generator=torch.Generator())


@pytest.mark.parametrize("cfg", [PolicyConfig(norm="group"), GPU_POLICY])
def test_other_configs(cfg: PolicyConfig) -> None:
    policy = Policy(cfg)
    assert policy(frames(2, size=cfg.image_size), torch.zeros(2, 11)).actions.shape == (2, 4)


def test_bad_inputs_are_refused_clearly() -> None:
    policy = Policy()
    with pytest.raises(ValueError, match="expects"):
        policy(frames(2, size=(32, 32)), torch.zeros(2, 11))
    with pytest.raises(TypeError, match="uint8"):
        policy(frames(2).float(), torch.zeros(2, 11))
    with pytest.raises(ValueError, match="state_dim"):
        policy(frames(2), torch.zeros(2, 7))
    with pytest.raises(ValueError, match="norm"):
        PolicyConfig(norm="batch")
    with pytest.raises(ValueError, match="length"):
        PolicyConfig(conv_filters=(8, 8), conv_strides=(2,))


def test_init_parameters_is_reproducible_from_a_generator() -> None:
    a = init_parameters(Policy(), torch.Generator().manual_seed(3))
    b = init_parameters(Policy(), torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("kind, cls", [("temporal", TemporalConvLoss), ("linear", LinearFeatureLoss)])
def test_adaptation_loss_is_a_nonnegative_scalar(kind: str, cls: type) -> None:
    loss = build_adaptation_loss(200, AdaptationLossConfig(kind=kind))
    assert isinstance(loss, cls)
    for features in (torch.randn(50, 200), torch.randn(3, 50, 200)):
        value = loss(features)
        assert value.shape == () and value.item() >= 0.0
    with pytest.raises(ValueError, match="kind"):
        AdaptationLossConfig(kind="lstm")


def test_query_glimpse_reads_the_map_under_the_query_and_grows_from_a_model_without_it() -> None:
    """policy.query_glimpse: the map's mean under the query's softmax joins the FC input; grown into, it starts with
    no effect, and once given weight the actions depend on what the map holds where the query looks."""
    feature_map = torch.randn(2, 32, 4, 4, generator=torch.Generator().manual_seed(0))
    peaked = torch.full((2, 4, 4), -1e4)
    peaked[:, 1, 2] = 0.0
    torch.testing.assert_close(map_under_query(feature_map, peaked), feature_map[:, :, 1, 2])
    torch.testing.assert_close(map_under_query(feature_map, torch.zeros(2, 4, 4)), feature_map.mean((2, 3)))

    plain = init_parameters(Policy(PolicyConfig(target_query=True)), torch.Generator().manual_seed(1))
    plain.requires_grad_(False).target_query.normal_(generator=torch.Generator().manual_seed(2))
    glimpsing = Policy(PolicyConfig(target_query=True, query_glimpse=True)).requires_grad_(False)
    assert "fc.0.weight" in grow_into(glimpsing, plain.state_dict())
    images, states = frames(2, 3), torch.randn(2, 3, 11, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(glimpsing(images, states).actions, plain(images, states).actions, rtol=0, atol=0)
    glimpsing.fc[0].weight[:, -32:].normal_(generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(glimpsing(images, states).actions, plain(images, states).actions)
    with pytest.raises(ValueError, match="target_query"):
        PolicyConfig(query_glimpse=True)


def test_query_depth_reads_the_depth_under_the_query_grows_from_a_model_without_it_and_is_zero_for_a_video() -> None:
    """policy.query_depth: (z, z u, z v) under the query's softmax joins the FC input from the images' fourth channel;
    grown into, it starts with no effect; a video (no depth) gives zeros; images without the channel are refused."""
    levels = torch.full((1, 8, 8), DEPTH_CENTRE + 2 * 8)
    cells = depth_cells(levels, (4, 4), levels_per_unit=8)
    peaked = torch.full((1, 4, 4), -1e4)
    peaked[:, 0, 3] = 0.0  # top right: u = 1, v = -1
    torch.testing.assert_close(map_under_query(cells, peaked), torch.tensor([[2.0, 2.0, -2.0]]))
    assert torch.equal(depth_cells(torch.zeros(1, 8, 8), (4, 4), 8), torch.zeros(1, 3, 4, 4))

    plain = init_parameters(Policy(PolicyConfig(target_query=True)), torch.Generator().manual_seed(1))
    plain.requires_grad_(False).target_query.normal_(generator=torch.Generator().manual_seed(2))
    reading = Policy(PolicyConfig(target_query=True, query_depth=True)).requires_grad_(False)
    assert "fc.0.weight" in grow_into(reading, plain.state_dict())
    images, states = frames(2, 3), torch.randn(2, 3, 11, generator=torch.Generator().manual_seed(3))
    depth = torch.randint(1, 256, (2, 3, 64, 64, 1), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    with_depth = torch.cat([images, depth], dim=-1)
    torch.testing.assert_close(reading(with_depth, states).actions, plain(images, states).actions, rtol=0, atol=0)
    reading.fc[0].weight[:, -3:].normal_(generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(reading(with_depth, states).actions, plain(images, states).actions)
    video_images, video_states = reading.video_inputs(images)
    assert video_images.shape == (2, 3, 64, 64, 4) and not video_images[..., 3].any()
    reading.fc[0].weight[:, :-3] = plain.fc[0].weight
    torch.testing.assert_close(reading(video_images, video_states).actions, plain(images, video_states).actions)
    with pytest.raises(ValueError, match=r"expects \(64, 64, 4\)"):
        reading(images, states)
    with pytest.raises(ValueError, match="target_query"):
        PolicyConfig(query_depth=True)
