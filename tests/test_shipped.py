"""The checkpoints that `make run` evaluates are in the repository, load alone, and are what their README says."""

from __future__ import annotations

import numpy as np
import torch

from imitation.policy import POLICY_HEAD
from imitation.rollout import Rollout
from imitation.video_conditioned import VideoConditionedLearner
from launch.main import SHIPPED, SHIPPED_MODELS


def test_shipped_checkpoints_load_and_adapt_from_a_video() -> None:
    rollouts = {name: Rollout.from_checkpoint(SHIPPED / file) for name, file in SHIPPED_MODELS.items()}
    daml, black_box = rollouts["daml"], rollouts["blackbox"]
    assert set(daml.learner.cfg.adapt_only) == {*POLICY_HEAD, "target_query"}
    assert not isinstance(daml.learner, VideoConditionedLearner) and isinstance(black_box.learner, VideoConditionedLearner)
    assert (daml.info.step, black_box.info.step) == (9000, 9500)  # as checkpoints/README.md says
    for rollout in rollouts.values():
        assert tuple(rollout.info.model.policy.conv_strides) == (2, 2, 1)  # both read a 16x16 last feature map
        assert rollout.info.model.adaptation_loss.target_match and rollout.info.model.policy.hue_prediction
        assert rollout.info.env["family"] == "reach" and rollout.image_size == (64, 64)
        video = np.random.default_rng(0).integers(0, 256, (30, 64, 64, 3), dtype=np.uint8)
        adapted, initial = rollout.adapt(video), rollout.initial_params()
        assert any(not torch.equal(adapted[name], initial[name]) for name in initial)
