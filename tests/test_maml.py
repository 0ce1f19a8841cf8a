"""MetaLearner: meta-gradient vs finite differences, vmap vs loop, first order, NaN guard, test-time adapt."""

import contextlib
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from imitation.adaptation_loss import AdaptationLossConfig
from imitation.bc import BCLossConfig, build_imitation_learner, imitation_batch
from imitation.layers import FastConvDerivatives, convolution
from imitation.maml import MetaBatch, MetaConfig, MetaLearner, NonFiniteLossError
from imitation.policy import POLICY_HEAD, PolicyConfig

TINY_POLICY = PolicyConfig(
    image_size=(8, 8), conv_filters=(3, 4), conv_kernel=3, conv_strides=(2, 2), fc_sizes=(6, 5), bias_transform_dim=2
)
TINY_GOAL_POLICY = replace(TINY_POLICY, goal_prediction=True, target_query=True)
TINY_LOSS = AdaptationLossConfig(channels=3, kernel_size=3, outputs=2)
TINY_MATCH_LOSS = replace(TINY_LOSS, target_match=True)
QUERY_ADAPTED = (*POLICY_HEAD, "target_query")
TINY_PLACE_POLICY = replace(TINY_GOAL_POLICY, place_query=True)  # a second query, aimed by a second match term
TINY_PLACE_LOSS = replace(TINY_MATCH_LOSS, place_match=True)
PLACE_ADAPTED = (*QUERY_ADAPTED, "place_query")


def tiny_learner(meta_cfg: MetaConfig, dtype: torch.dtype = torch.float64, loss_cfg=TINY_LOSS, seed: int = 0,
                 policy: PolicyConfig = TINY_POLICY):
    learner = build_imitation_learner(
        policy, loss_cfg, BCLossConfig(), meta_cfg, generator=torch.Generator().manual_seed(seed)
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


@pytest.mark.parametrize("inner_steps, adapt_only, policy, loss", [
    (1, (), TINY_POLICY, TINY_LOSS), (2, (), TINY_POLICY, TINY_LOSS), (2, POLICY_HEAD, TINY_POLICY, TINY_LOSS),
    (2, QUERY_ADAPTED, TINY_GOAL_POLICY, TINY_LOSS), (2, QUERY_ADAPTED, TINY_GOAL_POLICY, TINY_MATCH_LOSS),
    (2, PLACE_ADAPTED, TINY_PLACE_POLICY, TINY_PLACE_LOSS),
])
def test_meta_gradient_matches_finite_differences(inner_steps: int, adapt_only: tuple[str, ...], policy: PolicyConfig,
                                                  loss: AdaptationLossConfig) -> None:
    """Second order, learned loss and learned inner lrs: directional derivatives vs central differences."""
    cfg = MetaConfig(inner_steps=inner_steps, inner_lr=0.3, learn_inner_lr=True, inner_grad_clip=None, adapt_only=adapt_only)
    learner, batch = tiny_learner(cfg, loss_cfg=loss, policy=policy)
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


@pytest.mark.parametrize("dtype, tol, adapt_only, policy, loss", [
    (torch.float64, 1e-10, (), TINY_POLICY, TINY_LOSS), (torch.float32, 1e-5, (), TINY_POLICY, TINY_LOSS),
    (torch.float64, 1e-10, POLICY_HEAD, TINY_POLICY, TINY_LOSS),
    (torch.float64, 1e-10, QUERY_ADAPTED, TINY_GOAL_POLICY, TINY_LOSS),
    (torch.float64, 1e-10, QUERY_ADAPTED, TINY_GOAL_POLICY, TINY_MATCH_LOSS),
    (torch.float64, 1e-10, PLACE_ADAPTED, TINY_PLACE_POLICY, TINY_PLACE_LOSS),
])
def test_vmap_matches_loop(dtype: torch.dtype, tol: float, adapt_only: tuple[str, ...], policy: PolicyConfig,
                           loss: AdaptationLossConfig) -> None:
    cfg = MetaConfig(inner_steps=2, learn_inner_lr=True, inner_grad_clip=0.05, task_batching="loop", adapt_only=adapt_only)
    loop, batch = tiny_learner(cfg, dtype, loss, policy=policy)
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
    for learner in (loop, vmapped):  # validation's other-video loss: evaluate's post-adaptation outer loss, alone
        assert learner.adapted_outer_loss(batch) == pytest.approx(ev_loop["outer_loss_post"], rel=tol, abs=tol)


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


def test_support_of_other_tasks_is_a_cyclic_shift() -> None:
    learner, batch = tiny_learner(MetaConfig())
    other = batch.with_support_of_other_tasks()
    assert torch.equal(other.support_inputs[0][1], batch.support_inputs[0][0])
    assert torch.equal(other.support_inputs[0][0], batch.support_inputs[0][-1])
    assert other.query_inputs is batch.query_inputs and other.query_targets is batch.query_targets
    assert learner.evaluate(other)["outer_loss_post"] != learner.evaluate(batch)["outer_loss_post"]
    with pytest.raises(ValueError, match="at least 2 tasks"):
        MetaBatch(*(tuple(t[:1] for t in part) for part in batch.parts())).with_support_of_other_tasks()


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
        learner.meta_step(replace(batch, query_targets=(bad_actions, *batch.query_targets[1:])))
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


def test_adapt_only_adapts_the_head_and_meta_learns_everything() -> None:
    learner, batch = tiny_learner(MetaConfig(inner_lr=0.5, adapt_only=POLICY_HEAD), dtype=torch.float32)
    assert {name.split(".")[0] for name in learner.params()} == set(POLICY_HEAD)
    assert len(learner.inner_lrs) == len(learner.params())
    with torch.no_grad():
        adapted = learner.adapt(learner.model.video_inputs(batch.support_inputs[0][0]))
    assert set(adapted) == set(learner.params())
    # The action layer is after the features that the video loss sees: its inner gradient is zero.
    changed = {name for name, p in learner.params().items() if not torch.equal(adapted[name], p)}
    assert changed == {name for name in learner.params() if not name.startswith("head.")}
    before = {name: p.detach().clone() for name, p in learner.model.named_parameters()}
    learner.meta_step(batch)
    assert all(not torch.equal(before[name], p) for name, p in learner.model.named_parameters())  # trunk included


def test_adapt_only_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"\['fcc'\] match no trainable parameter"):
        tiny_learner(MetaConfig(adapt_only=("fc", "fcc")))


# ----- convolutions with fast second derivatives (imitation.layers.convolution, used by second-order MAML on CPU)

CONV_CASES = [  # (dims, stride, padding, dilation, groups)
    (2, 2, 2, 1, 1), (2, 1, 1, 2, 2), (2, (2, 1), (0, 1), 1, 1), (1, 1, 0, 1, 1), (1, 2, 4, 1, 2),
]


def conv_inputs(dims: int, groups: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, *[7] * dims, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4 // groups, *[3] * dims, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    return x, w, b


@pytest.mark.parametrize("dims, stride, padding, dilation, groups", CONV_CASES)
def test_fast_conv_matches_torch_up_to_second_derivatives(dims, stride, padding, dilation, groups) -> None:
    x, w, b = conv_inputs(dims, groups)
    fast = lambda x, w, b: convolution(x, w, b, stride, padding, dilation, groups)  # noqa: E731
    ref = lambda x, w, b: getattr(F, f"conv{dims}d")(x, w, b, stride, padding, dilation, groups)  # noqa: E731
    assert torch.autograd.gradcheck(fast, (x, w, b))
    assert torch.autograd.gradgradcheck(fast, (x, w, b))
    y, y_ref = fast(x, w, b), ref(x, w, b)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    grad_y = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1), requires_grad=True)
    # First derivatives, and second derivatives of a non-linear function of them w.r.t. x, w, b and grad_y.
    results = []
    for out in (y, y_ref):
        first = torch.autograd.grad(out, (x, w, b), grad_y, create_graph=True)
        scalar = sum((d * torch.sin(d)).sum() for d in first)
        second = torch.autograd.grad(scalar, (x, w, grad_y), allow_unused=True)
        results.append((first, second))
    for a, c in zip(*(first + second for first, second in results)):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)


def test_fast_conv_under_torch_func() -> None:
    """Second order inside torch.func (grad of a grad norm), plain and vmapped over per-sample weights and inputs."""
    x, w, b = (t.detach() for t in conv_inputs(2, 1))

    def grad_of_grad_norm(conv):
        def grad_norm(w, x):
            inner = torch.func.grad(lambda w: torch.tanh(conv(x, w, b, 2, 1)).sum())(w)
            return inner.square().sum()

        return torch.func.grad(grad_norm)

    fast, ref = grad_of_grad_norm(convolution), grad_of_grad_norm(F.conv2d)
    torch.testing.assert_close(fast(w, x), ref(w, x), rtol=1e-12, atol=1e-12)
    ws, xs = torch.stack([w, 2 * w]), x[:, None]  # vmap: sample i has weights ws[i] and input xs[i] (1, C, H, W)
    torch.testing.assert_close(torch.func.vmap(fast)(ws, xs), torch.func.vmap(ref)(ws, xs), rtol=1e-12, atol=1e-12)


def test_fast_conv_mode_routes_conv_modules_and_falls_back() -> None:
    conv, same = torch.nn.Conv2d(3, 4, 3, 2, 1).double(), torch.nn.Conv1d(3, 4, 3, padding="same").double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with FastConvDerivatives():
        assert type(conv(x).grad_fn).__name__ == "_ConvolutionBackward"
        out_same = same(x[:, :, 0])  # string padding: PyTorch's own conv
        assert type(out_same.grad_fn).__name__ == "ConvolutionBackward0"
        torch.testing.assert_close(conv(x[0]), F.conv2d(x[0], conv.weight, conv.bias, 2, 1))  # unbatched input
    torch.testing.assert_close(out_same, same(x[:, :, 0]))


def test_second_order_meta_gradient_same_with_torch_conv_kernels() -> None:
    cfg = MetaConfig(inner_steps=2, inner_lr=0.3, learn_inner_lr=True, inner_grad_clip=None)
    learner, batch = tiny_learner(cfg)
    fast = meta_gradient(learner, batch)
    learner._conv_kernels = contextlib.nullcontext  # PyTorch's own conv derivatives
    for a, b in zip(fast, meta_gradient(learner, batch)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_meta_step_gradients_are_those_of_meta_loss(batching: str) -> None:
    """The loop backpropagates task by task; the gradients handed to reduce_grads equal meta_loss's."""
    cfg = MetaConfig(inner_steps=2, learn_inner_lr=True, inner_grad_clip=0.05, task_batching=batching)
    learner, batch = tiny_learner(cfg)
    expected = meta_gradient(learner, batch)
    seen: list[torch.Tensor] = []
    stats = learner.meta_step(batch, reduce_grads=lambda grads: seen.extend(g.clone() for g in grads))
    assert len(seen) == len(expected)
    for a, b in zip(seen, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    loss, loss_stats = tiny_learner(cfg)[0].meta_loss(batch)
    assert stats["outer_loss"] == pytest.approx(loss.detach().item(), rel=1e-12)
    assert stats["inner_loss_pre"] == pytest.approx(float(loss_stats["inner_loss_pre"]), rel=1e-12)
