"""The black-box baseline: a video encoder writes the policy's bias transform; plain BC trains it."""

from dataclasses import replace

import pytest
import torch
from torch.func import functional_call

from imitation.adaptation_loss import build_adaptation_loss
from imitation.maml import MetaConfig
from imitation.video_conditioned import VideoConditionedLearner
from tests.test_maml import TINY_GOAL_POLICY, TINY_LOSS, TINY_PLACE_POLICY, TINY_POLICY, tiny_learner

ENCODER = replace(TINY_LOSS, kind="encoder")
PLACE_ENCODER = replace(ENCODER, target_match=True, place_match=True)  # reads the object and where it ends


@pytest.mark.parametrize("policy, conditioned, encoder", [
    (TINY_POLICY, ["bias_transform"], ENCODER),
    (TINY_GOAL_POLICY, ["bias_transform", "target_query"], ENCODER),
    (TINY_GOAL_POLICY, ["bias_transform", "target_query"], replace(ENCODER, target_match=True)),
    (TINY_PLACE_POLICY, ["bias_transform", "target_query", "place_query"], PLACE_ENCODER),
])
def test_the_video_sets_the_conditioned_parameters_and_nothing_else(policy, conditioned: list[str], encoder) -> None:
    learner, batch = tiny_learner(MetaConfig(learn_inner_lr=True, inner_steps=3), torch.float64, encoder, policy=policy)
    assert isinstance(learner, VideoConditionedLearner) and learner.param_names == conditioned
    videos = batch.support_inputs[0]
    with torch.no_grad():
        a, b = (learner.adapt(learner.model.video_inputs(videos[i])) for i in (0, 1))
    params = dict(learner.model.named_parameters())
    assert set(a) == set(conditioned) and all(a[name].shape == params[name].shape for name in conditioned)
    assert all(not torch.allclose(a[name], b[name]) for name in conditioned)  # another video, another embedding
    images, states = batch.query_inputs[0][0], batch.query_inputs[1][0]
    with torch.no_grad():
        assert not torch.allclose(functional_call(learner.model, a, (images, states)).actions, learner.model(images, states).actions)


@pytest.mark.parametrize("policy, encoder", [(TINY_POLICY, ENCODER), (TINY_PLACE_POLICY, PLACE_ENCODER)])
def test_training_is_behaviour_cloning_through_the_encoder(policy, encoder) -> None:
    learner, batch = tiny_learner(MetaConfig(), torch.float64, encoder, policy=policy)
    written = {f"model.{name}" for name in learner.param_names}  # the encoder writes these: BC never reaches them
    before = {name: p.detach().clone() for name, p in learner.named_parameters()}
    first = learner.evaluate(batch)
    assert set(first) == {"outer_loss_pre", "outer_loss_post"}
    for _ in range(20):
        stats = learner.meta_step(batch)
    assert set(stats) == {"outer_loss", "grad_norm", "grad_norm_model", "grad_norm_inner_loss"}
    assert stats["grad_norm_inner_loss"] > 0
    assert all(not torch.equal(before[name], p) for name, p in learner.named_parameters() if name not in written)
    assert learner.evaluate(batch)["outer_loss_post"] < first["outer_loss_post"]


@pytest.mark.parametrize("policy, encoder", [(TINY_POLICY, ENCODER), (TINY_PLACE_POLICY, PLACE_ENCODER)])
def test_vmap_matches_loop(policy, encoder) -> None:
    loop, batch = tiny_learner(MetaConfig(task_batching="loop"), torch.float64, encoder, policy=policy)
    vmapped = VideoConditionedLearner(loop.model, loop.inner_loss, loop.outer_loss, replace(loop.cfg, task_batching="vmap"))
    a, b = loop.meta_loss(batch)[0], vmapped.meta_loss(batch)[0]
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert loop.evaluate(batch) == pytest.approx(vmapped.evaluate(batch), rel=1e-10)
    post = loop.evaluate(batch)["outer_loss_post"]
    assert loop.adapted_outer_loss(batch) == pytest.approx(post, rel=1e-10)
    assert vmapped.adapted_outer_loss(batch) == pytest.approx(post, rel=1e-10)


def test_the_encoder_is_not_a_loss() -> None:
    with pytest.raises(ValueError, match="not a loss"):
        build_adaptation_loss(4, ENCODER)


def test_the_place_read_needs_the_target_read_and_a_place_query() -> None:
    with pytest.raises(ValueError, match="target_match=true"):
        tiny_learner(MetaConfig(), torch.float64, replace(ENCODER, place_match=True), policy=TINY_PLACE_POLICY)
    with pytest.raises(ValueError, match="place_match=true"):
        tiny_learner(MetaConfig(), torch.float64, replace(ENCODER, target_match=True), policy=TINY_PLACE_POLICY)
    with pytest.raises(ValueError, match="place_query=true"):
        tiny_learner(MetaConfig(), torch.float64, PLACE_ENCODER, policy=TINY_GOAL_POLICY)
