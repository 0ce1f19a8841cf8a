"""MetaLearner: meta-gradient vs finite differences, vmap vs loop, first order, NaN guard, test-time adapt."""

from dataclasses import replace

import pytest
import torch
from torch.func import functional_call

from imitation.adaptation_loss import AdaptationLossConfig
from imitation.bc import BCLossConfig, build_imitation_learner, imitation_batch
from imitation.maml import MetaBatch, MetaConfig, MetaLearner, NonFiniteLossError
from imitation.policy import PolicyConfig

TINY_POLICY = PolicyConfig(
    image_size=(8, 8), conv_filters=(3, 4), conv_kernel=3, conv_strides=(2, 2), fc_sizes=(6, 5), bias_transform_dim=2
)
TINY_LOSS = AdaptationLossConfig(channels=3, kernel_size=3, outputs=2)


def tiny_learner(meta_cfg: MetaConfig, dtype: torch.dtype = torch.float64, loss_cfg=TINY_LOSS, seed: int = 0):
    learner = build_imitation_learner(
        TINY_POLICY, loss_cfg, BCLossConfig(), meta_cfg, generator=torch.Generator().manual_seed(seed)
    ).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    n_tasks, t = 3, 5
    images = lambda: torch.randint(0, 256, (n_tasks, t, 8, 8, 3), dtype=torch.uint8, generator=g)  # noqa: E731
    actions = torch.randn(n_tasks, t, 4, generator=g, dtype=dtype)
    batch = imitation_batch(learner.model, images(), images(), torch.randn(n_tasks, t, 11, generator=g), actions)
    return learner, batch


def meta_parameters(learner: MetaLearner) -> list[torch.Tensor]:
    return [p for p in learner.parameters() if p.requires_grad]


def meta_gradient(learner: MetaLearner, batch: MetaBatch) -> list[torch.Tensor]:
    loss, _ = learner.meta_loss(batch)
    return list(torch.autograd.grad(loss, meta_parameters(learner)))


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_meta_gradient_matches_finite_differences(inner_steps: int) -> None:
    """Second order, learned loss and learned inner lrs: directional derivatives vs central differences."""
    cfg = MetaConfig(inner_steps=inner_steps, inner_lr=0.3, learn_inner_lr=True, inner_grad_clip=None)
    learner, batch = tiny_learner(cfg)
    params = meta_parameters(learner)
    grads = meta_gradient(learner, batch)
    assert all(g.abs().sum() > 0 for g in grads[-len(list(learner.inner_loss.parameters())) - 1 :])
    g = torch.Generator().manual_seed(7)
    eps = 1e-6
    for _ in range(3):
        direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
        analytic = sum((gr * d).sum() for gr, d in zip(grads, direction))
        losses = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, d in zip(params, direction):
                    p.add_(sign * eps * d)
            losses.append(learner.meta_loss(batch)[0].detach())
            with torch.no_grad():
                for p, d in zip(params, direction):
                    p.sub_(sign * eps * d)
        numeric = (losses[0] - losses[1]) / (2 * eps)
        assert analytic.item() == pytest.approx(numeric.item(), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_vmap_matches_loop(dtype: torch.dtype, tol: float) -> None:
    cfg = MetaConfig(inner_steps=2, learn_inner_lr=True, inner_grad_clip=0.05, task_batching="loop")
    loop, batch = tiny_learner(cfg, dtype)
    vmapped = MetaLearner(loop.model, loop.inner_loss, loop.outer_loss, replace(cfg, task_batching="vmap"))
    vmapped.inner_lrs = loop.inner_lrs
    loss_loop, stats_loop = loop.meta_loss(batch)
    loss_vmap, stats_vmap = vmapped.meta_loss(batch)
    torch.testing.assert_close(loss_vmap, loss_loop, rtol=tol, atol=tol)
    torch.testing.assert_close(stats_vmap["inner_loss_pre"], stats_loop["inner_loss_pre"], rtol=tol, atol=tol)
    for a, b in zip(meta_gradient(vmapped, batch), meta_gradient(loop, batch)):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    ev_loop, ev_vmap = loop.evaluate(batch), vmapped.evaluate(batch)
    assert ev_vmap == pytest.approx(ev_loop, rel=tol, abs=tol)


def test_first_order_refuses_a_learned_loss_and_works_with_a_frozen_one() -> None:
    with pytest.raises(ValueError, match="zero meta-gradient"):
        tiny_learner(MetaConfig(first_order=True))
    learner, batch = tiny_learner(MetaConfig(first_order=False))
    learner.inner_loss.requires_grad_(False)
    first = MetaLearner(learner.model, learner.inner_loss, learner.outer_loss, MetaConfig(first_order=True))
    stats = first.meta_step(batch)
    assert stats["grad_norm_model"] > 0 and stats["grad_norm_inner_loss"] == 0
    # Unfreezing afterwards is caught at the next step.
    learner.inner_loss.requires_grad_(True)
    with pytest.raises(ValueError, match="zero meta-gradient"):
        first.meta_step(batch)


def test_first_order_differs_from_second_order() -> None:
    second, batch = tiny_learner(MetaConfig(inner_lr=0.3, inner_grad_clip=None))
    second.inner_loss.requires_grad_(False)
    first = MetaLearner(second.model, second.inner_loss, second.outer_loss, replace(second.cfg, first_order=True))
    g1, g2 = meta_gradient(first, batch), meta_gradient(second, batch)
    assert not all(torch.allclose(a, b) for a, b in zip(g1, g2))


def test_nan_losses_raise_and_leave_parameters_unchanged() -> None:
    learner, batch = tiny_learner(MetaConfig(), dtype=torch.float32)
    before = [p.detach().clone() for p in learner.parameters()]
    bad_actions = batch.query_targets[0].clone()
    bad_actions[1, 2, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="outer loss"):
        learner.meta_step(replace(batch, query_targets=(bad_actions,)))
    nan_loss, batch = tiny_learner(MetaConfig(), torch.float32, replace(TINY_LOSS, scale=float("inf")))
    with pytest.raises(NonFiniteLossError, match="inner loss"):
        nan_loss.meta_step(batch)
    assert all(torch.equal(a, p) for a, p in zip(before, learner.parameters()))


def test_meta_step_reports_and_updates() -> None:
    learner, batch = tiny_learner(MetaConfig(learn_inner_lr=True), dtype=torch.float32)
    before = [p.detach().clone() for p in learner.parameters()]
    stats = learner.meta_step(batch)
    expected = {"outer_loss", "inner_loss_pre", "grad_norm", "grad_norm_model", "grad_norm_inner_loss"}
    assert expected | {"grad_norm_inner_lr", "inner_lr_mean", "inner_lr_min", "inner_lr_max"} == set(stats)
    assert all(isinstance(v, float) for v in stats.values())
    assert all(not torch.equal(a, p) for a, p in zip(before, learner.parameters()))


def test_adapt_at_test_time_under_no_grad() -> None:
    learner, batch = tiny_learner(MetaConfig(inner_lr=0.5), dtype=torch.float32)
    video = batch.support_inputs[0][0]
    with torch.no_grad():
        adapted = learner.adapt(learner.model.video_inputs(video))
        images, states = batch.query_inputs[0][0], batch.query_inputs[1][0]
        before = learner.model(images, states).actions
        after = functional_call(learner.model, adapted, (images, states)).actions
    assert set(adapted) == set(dict(learner.model.named_parameters()))
    assert after.shape == before.shape and not torch.allclose(after, before)
    assert all(not p.requires_grad for p in adapted.values())
