"""The black-box baseline: a video-conditioned policy, trained on the same data, in the same job, as DAML.

DAML adapts the policy by a gradient step on a learned loss of the video's per-frame features. The black-box
policy reads the *same* features (the policy's last hidden layer on the video, robot state zeroed) with the
same temporal convolutions, averages their outputs over time, and uses the result as the policy's
bias-transformation vector (and target and place queries, when the policy has them): conditioning instead of
adaptation, with no inner gradient at all. Both are trained by behaviour cloning on a robot demo of the task, so
the only difference is how the video gets in.

It is a ``MetaLearner`` whose "adaptation" is that encoder, so training, checkpoints, rollout and evaluation
handle it unchanged (``Params`` then holds the encoded bias transform and queries).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from imitation.maml import MetaBatch, MetaConfig, MetaLearner, Params

# The policy parameters that the video's embedding replaces (those the policy has), in the embedding's order.
CONDITIONED = ("bias_transform", "target_query", "place_query")


def conditioned_sizes(model: nn.Module) -> dict[str, int]:
    """Name -> size of each policy parameter the embedding writes: the length the encoder must output."""
    params = dict(model.named_parameters())
    return {name: params[name].numel() for name in CONDITIONED if name in params}


class VideoConditionedLearner(MetaLearner):
    """``adapt`` = encode the video into the bias transform; ``meta_step`` = one Adam step of plain BC."""

    def __init__(self, model: nn.Module, encoder: nn.Module, outer_loss: Callable[..., Tensor], cfg: MetaConfig = MetaConfig()) -> None:
        # One "step", no learned inner lrs: the fields about gradient steps do not apply.
        self.conditioned = conditioned_sizes(model)
        cfg = replace(cfg, inner_steps=1, learn_inner_lr=False, first_order=False, adapt_only=tuple(self.conditioned))
        super().__init__(model, encoder, outer_loss, cfg)

    @torch.no_grad()
    def evaluate(self, batch: MetaBatch) -> dict[str, float]:
        """BC loss with the meta-learned bias transform (pre) and with the video's embedding (post)."""
        params = self.params()

        def task_eval(s_in: tuple, s_tg: tuple, q_in: tuple, q_tg: tuple) -> tuple[Tensor]:
            conditioned, _ = self._adapt(params, s_in, s_tg, create_graph=False)
            return (torch.stack([self._outer(params, q_in, q_tg), self._outer(conditioned, q_in, q_tg)]),)

        (losses,) = self._map_tasks(task_eval, batch)
        return {name: float(value) for name, value in zip(("outer_loss_pre", "outer_loss_post"), losses.mean(dim=0))}

    def _adapt(self, params: Params, inputs: tuple, targets: tuple, create_graph: bool,
               plain_autograd: bool = False) -> tuple[Params, Tensor]:
        output = functional_call(self.model, params, inputs)
        parts = torch.split(self.inner_loss(output), list(self.conditioned.values()))
        return {**params, **dict(zip(self.conditioned, parts))}, output.features.new_zeros(0)

    def _loss_stats(self, outer: Tensor, inner: Tensor) -> dict[str, Tensor]:
        return {"outer_loss": outer.mean().detach()}
