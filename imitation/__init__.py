"""Meta-learning core: vision policy, learned video adaptation loss, MAML meta-learner (torch.func)."""

from imitation.adaptation_loss import (
    AdaptationLossConfig,
    LinearFeatureLoss,
    TemporalConvLoss,
    VideoAdaptationLoss,
    build_adaptation_loss,
)
from imitation.bc import BCLossConfig, BehaviourCloningLoss, build_imitation_learner, imitation_batch
from imitation.maml import MetaBatch, MetaConfig, MetaLearner, NonFiniteLossError
from imitation.policy import GPU_POLICY, Policy, PolicyConfig, PolicyOutput

__all__ = [
    "GPU_POLICY",
    "AdaptationLossConfig",
    "BCLossConfig",
    "BehaviourCloningLoss",
    "LinearFeatureLoss",
    "MetaBatch",
    "MetaConfig",
    "MetaLearner",
    "NonFiniteLossError",
    "Policy",
    "PolicyConfig",
    "PolicyOutput",
    "TemporalConvLoss",
    "VideoAdaptationLoss",
    "build_adaptation_loss",
    "build_imitation_learner",
    "imitation_batch",
]
