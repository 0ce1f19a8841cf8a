"""Reading the target from a video: the reader's pooling, the match step that aims the query, the errors."""

import pytest
import torch

from imitation.adaptation_loss import AdaptationLossConfig
from imitation.bc import build_imitation_learner
from imitation.policy import Policy, PolicyConfig, PolicyOutput
from imitation.target_reader import TargetMatchLoss, TargetReader

CHANNELS, SIDE = 6, 4


def video_output(maps: torch.Tensor, query: torch.Tensor) -> PolicyOutput:
    """What the policy returns for a video pass, reduced to the fields the match loss reads."""
    logits = torch.einsum("tchw,c->thw", maps, query)
    return PolicyOutput(actions=torch.zeros(0), features=torch.zeros(0), feature_map=maps, query_logits=logits)


def scene(appearances: torch.Tensor, where: list[int]) -> torch.Tensor:
    """A (C, SIDE, SIDE) map of background noise with ``appearances[i]`` at flat position ``where[i]``."""
    g = torch.Generator().manual_seed(len(where))
    flat = 0.05 * torch.randn(CHANNELS, SIDE * SIDE, generator=g, dtype=torch.float64)
    for appearance, k in zip(appearances, where):
        flat[:, k] = appearance
    return flat.reshape(CHANNELS, SIDE, SIDE)


def test_the_match_step_aims_the_query_at_what_was_where_the_hand_ends() -> None:
    """One gradient step on the match loss moves a blank query to the target's appearance: in a *new* scene with
    the three objects elsewhere, the adapted query's softmax peaks on the target, whichever of the three it is."""
    objects = torch.eye(CHANNELS, dtype=torch.float64)[:3] * 2  # three distinct appearances (channels 0, 1, 2)
    hand = torch.zeros(CHANNELS, dtype=torch.float64)
    hand[5] = 3.0  # the demonstrator's hand: its own channel
    loss = TargetMatchLoss(CHANNELS, scale=5.0).double()
    with torch.no_grad():  # the reader looks for the hand in the last frame
        loss.reader.where.weight.zero_()
        loss.reader.where.weight[0, CHANNELS + 5] = 10.0
    video_positions, robot_positions = [1, 6, 11], [14, 3, 8]
    for target in range(3):
        first = scene(objects, video_positions)
        last = first.clone().flatten(1)
        last[:, video_positions[target]] += hand
        maps = torch.stack([first, last.reshape_as(first)])
        query = torch.zeros(CHANNELS, dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(loss(video_output(maps, query)), query)
        adapted = query - 1.0 * grad
        robot = scene(objects, robot_positions)
        scores = torch.einsum("chw,c->hw", robot, adapted).flatten()
        assert int(scores.argmax()) == robot_positions[target]


def test_the_reader_pools_the_first_frame_where_the_last_frame_scores_highest() -> None:
    reader = TargetReader(CHANNELS).double()
    with torch.no_grad():
        reader.where.weight.zero_()
        reader.where.bias.zero_()
        reader.where.weight[0, CHANNELS + 0] = 50.0  # channel 0 of the last frame
    maps = torch.zeros(2, CHANNELS, SIDE, SIDE, dtype=torch.float64)
    maps[1, 0, 2, 3] = 1.0
    maps[0, :, 2, 3] = torch.arange(CHANNELS, dtype=torch.float64)
    weights, appearance = reader(maps)
    assert weights.shape == (SIDE * SIDE,) and int(weights.argmax()) == 2 * SIDE + 3
    torch.testing.assert_close(appearance, torch.arange(CHANNELS, dtype=torch.float64), rtol=0, atol=1e-3)


def test_a_place_match_reads_the_place_query_scores() -> None:
    """scores="place_logits": the term reads the place query's scores, with a reader of its own."""
    maps = torch.randn(2, CHANNELS, SIDE, SIDE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    target, place = torch.eye(CHANNELS, dtype=torch.float64)[:2]
    output = video_output(maps, target)._replace(place_logits=torch.einsum("tchw,c->thw", maps, place))
    match, place_match = TargetMatchLoss(CHANNELS, 5.0).double(), TargetMatchLoss(CHANNELS, 5.0, "place_logits").double()
    place_match.load_state_dict(match.state_dict())
    swapped = output._replace(query_logits=output.place_logits)
    assert place_match(output).item() == pytest.approx(match(swapped).item())
    assert place_match(output).item() != pytest.approx(match(output).item())


def test_policy_returns_its_feature_maps_only_with_a_target_query() -> None:
    frames = torch.zeros(2, 5, 64, 64, 3, dtype=torch.uint8)
    states = torch.zeros(2, 5, 11)
    out = Policy(PolicyConfig(target_query=True))(frames, states)
    assert out.feature_map.shape == (2, 5, 32, 8, 8) and out.query_logits.shape == (2, 5, 8, 8)
    plain = Policy()(frames, states)
    assert plain.feature_map is None and plain.query_logits is None


def test_bad_uses_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="target_query"):
        build_imitation_learner(PolicyConfig(), AdaptationLossConfig(target_match=True), generator=torch.Generator())
    with pytest.raises(ValueError, match="target_query"):
        TargetMatchLoss(CHANNELS, 1.0)(PolicyOutput(torch.zeros(0), torch.zeros(0)))
    with pytest.raises(ValueError, match=r"\(T, C, h, w\)"):
        TargetReader(CHANNELS)(torch.zeros(CHANNELS, SIDE, SIDE))
    with pytest.raises(ValueError, match="> 0"):
        TargetMatchLoss(CHANNELS, 0.0)
    with pytest.raises(ValueError, match="scores must be one of"):
        TargetMatchLoss(CHANNELS, 1.0, "goal")
