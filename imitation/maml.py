"""Model-agnostic meta-learning (MAML) with ``torch.func``.

The learner is given any ``nn.Module`` (the model), an inner loss and an outer loss. For each task it takes
``inner_steps`` gradient steps on the inner loss of the task's *support* data, starting from the shared
parameters, and evaluates the outer loss of the adapted parameters on the task's *query* data:

    theta'_task = theta - lr * clip(grad_theta inner_loss(model(theta, support_inputs), *support_targets))
    meta_loss   = mean_task outer_loss(model(theta'_task, query_inputs), *query_targets)

Adam then updates theta together with the inner loss's own weights (a learned loss) and, optionally, one
learned inner learning rate per parameter tensor. Second order by default: the meta-gradient flows through
the inner gradient. First order treats the inner gradient as a constant; the inner loss's weights then reach
the meta-loss only through that constant and get exactly zero gradient, so first order is refused unless the
inner loss has no trainable weights (freeze a learned loss explicitly with ``requires_grad_(False)``).

Signatures the learner relies on:
    model(*inputs) -> output                      (any output type; no BatchNorm running statistics)
    inner_loss(output, *support_targets) -> scalar  (an nn.Module with learnable weights, or any callable)
    outer_loss(output, *query_targets) -> scalar
For imitation the support inputs are a video with a zeroed robot state and there are no support targets.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields
from typing import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from imitation.layers import FastConvDerivatives

Params = dict[str, Tensor]
TASK_BATCHING = ("auto", "loop", "vmap")


@dataclass(frozen=True)
class MetaConfig:
    """MAML settings. Defaults follow MIL/DAML pushing (1 step, lr 0.01, clip 10, full second order)."""

    inner_steps: int = 1  # gradient steps per task; 0 = no adaptation (plain multi-task training)
    inner_lr: float = 0.01  # initial (or fixed) inner learning rate
    learn_inner_lr: bool = False  # learn one inner lr per parameter tensor, meta-updated with the rest
    inner_grad_clip: float | None = 10.0  # element-wise clip of inner gradients to [-c, c]; None = no clip
    first_order: bool = False  # treat inner gradients as constants (refused with a learned inner loss)
    # "loop" over the tasks of a meta-batch, "vmap", or "auto": vmap on CUDA, loop elsewhere (the faster one
    # measured by launch/bench_meta.py: on CPU the loop, at half the memory; on an H200 vmap, ~3x the loop)
    task_batching: str = "auto"
    meta_lr: float = 1e-3  # Adam learning rate of the outer update
    # Parameters the inner step adapts, by name or dotted prefix (e.g. ("fc", "head", "bias_transform")); empty =
    # all of them (MAML). The others are still meta-learned, but the inner gradient and its second-order terms
    # stop short of them: adapting only the layers after the conv trunk (ANIL, Raghu et al. 2020) costs about a
    # third of a full second-order step here (launch/bench_meta.py).
    adapt_only: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.task_batching not in TASK_BATCHING:
            raise ValueError(f"task_batching must be one of {TASK_BATCHING}, got {self.task_batching!r}")
        if self.inner_steps < 0:
            raise ValueError(f"inner_steps must be >= 0, got {self.inner_steps}")


@dataclass(frozen=True)
class MetaBatch:
    """Tensors of a meta-batch; each has the task index as its first dimension."""

    support_inputs: tuple[Tensor, ...]  # model inputs of the inner (adaptation) pass
    support_targets: tuple[Tensor, ...]  # extra inner-loss arguments (empty for a learned video loss)
    query_inputs: tuple[Tensor, ...]  # model inputs of the outer pass
    query_targets: tuple[Tensor, ...]  # extra outer-loss arguments (e.g. expert actions)

    @property
    def n_tasks(self) -> int:
        return self.support_inputs[0].shape[0]

    def parts(self) -> tuple[tuple[Tensor, ...], ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def task(self, i: int) -> tuple[tuple[Tensor, ...], ...]:
        """The parts of task ``i``, without the task dimension."""
        return tuple(tuple(t[i] for t in part) for part in self.parts())

    def to(self, device: torch.device | str) -> MetaBatch:
        return MetaBatch(*(tuple(t.to(device, non_blocking=True) for t in part) for part in self.parts()))

    def with_support_of_other_tasks(self) -> MetaBatch:
        """Each task paired with the support data of the next task (cyclically): a control for "uses the support"."""
        if self.n_tasks < 2:
            raise ValueError("pairing a task with another task's support data needs at least 2 tasks")
        rolled = (tuple(t.roll(1, dims=0) for t in part) for part in (self.support_inputs, self.support_targets))
        return MetaBatch(*rolled, self.query_inputs, self.query_targets)


class NonFiniteLossError(FloatingPointError):
    """A loss or the meta-gradient became NaN/inf; raised before the parameters are changed."""


class MetaLearner(nn.Module):
    """MAML over any model; ``meta_step`` for training, ``adapt`` for test time, ``evaluate`` for validation."""

    def __init__(
        self,
        model: nn.Module,
        inner_loss: Callable[..., Tensor],
        outer_loss: Callable[..., Tensor],
        cfg: MetaConfig = MetaConfig(),
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = model
        self.inner_loss = inner_loss  # registered as a submodule (and meta-learned) when it is an nn.Module
        self.outer_loss = outer_loss
        self.param_names = _adapted_names(model, cfg.adapt_only)
        self._adapts_conv = _adapts_a_conv(model, self.param_names)
        first = next(model.parameters())
        lrs = torch.full((len(self.param_names),), cfg.inner_lr, dtype=first.dtype, device=first.device)
        if cfg.learn_inner_lr:
            self.inner_lrs = nn.Parameter(lrs)
        else:
            self.register_buffer("inner_lrs", lrs)
        self._check_first_order()
        self._optimizer: torch.optim.Adam | None = None

    @property
    def optimizer(self) -> torch.optim.Adam:
        """One Adam over every meta-learned tensor, made on first use: making an optimizer imports torch._dynamo
        (~2 s), which adaptation and deployment never need (a rollout, an evaluation worker's start)."""
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.cfg.meta_lr)
        return self._optimizer

    def params(self) -> Params:
        """The model parameters that the inner loop adapts (the meta-learned initialisation), by name.

        Parameters left out (``cfg.adapt_only``) are taken from the model by ``functional_call``.
        """
        named = dict(self.model.named_parameters())
        return {name: named[name] for name in self.param_names}

    def adapt(self, support_inputs: tuple[Tensor, ...], support_targets: tuple[Tensor, ...] = ()) -> Params:
        """Test time: adapted parameters for ONE task (no task dimension). Works under ``torch.no_grad``.

        Use them with ``torch.func.functional_call(learner.model, params, inputs)``.
        """
        adapted, _ = self._adapt(self.params(), support_inputs, support_targets, create_graph=False)
        return {name: p.detach() for name, p in adapted.items()}

    def meta_loss(self, batch: MetaBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """Differentiable meta-loss (mean over tasks of the post-adaptation outer loss) and detached statistics."""
        self._check_first_order()
        with self._conv_kernels():
            outer, inner = self._map_tasks(self._task_losses(), batch)
        _check_finite("inner loss", inner)
        _check_finite("outer loss (post-adaptation)", outer)
        return outer.mean(), self._loss_stats(outer, inner)

    def meta_step(
        self, batch: MetaBatch, reduce_grads: Callable[[list[Tensor]], None] | None = None
    ) -> dict[str, float]:
        """One Adam update of model, inner-loss weights and inner lrs; returns losses, grad norms, lr stats.

        ``reduce_grads`` is for data-parallel training: called between backward and the update with the
        gradients (same order in every process), it must average them across processes in place.
        With the task loop, each task's loss is backpropagated as soon as it is computed (one task's graph in
        memory at a time); the gradients are those of ``meta_loss(batch)[0]`` up to float summation order.
        """
        if self._task_batching() == "loop":
            stats = self._backward_per_task(batch)
        else:
            loss, stats = self.meta_loss(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        if reduce_grads is not None:
            reduce_grads([p.grad for p in self.parameters() if p.grad is not None])
        stats |= self._grad_norms()
        _check_finite("meta-gradient norm", stats["grad_norm"])
        self.optimizer.step()
        if self.cfg.learn_inner_lr:
            lrs = self.inner_lrs.detach()
            stats |= {"inner_lr_mean": lrs.mean(), "inner_lr_min": lrs.min(), "inner_lr_max": lrs.max()}
        return {key: float(value) for key, value in stats.items()}

    @torch.no_grad()
    def evaluate(self, batch: MetaBatch) -> dict[str, float]:
        """Mean inner and outer losses before and after adaptation (test-time adaptation, no meta-update)."""
        params = self.params()

        def task_eval(s_in: tuple, s_tg: tuple, q_in: tuple, q_tg: tuple) -> Tensor:
            adapted, inner = self._adapt(params, s_in, s_tg, create_graph=False)
            return torch.stack([
                self._inner(params, s_in, s_tg),
                self._inner(adapted, s_in, s_tg),
                self._outer(params, q_in, q_tg),
                self._outer(adapted, q_in, q_tg),
            ])

        (losses,) = self._map_tasks(lambda *parts: (task_eval(*parts),), batch)
        names = ("inner_loss_pre", "inner_loss_post", "outer_loss_pre", "outer_loss_post")
        return {name: float(value) for name, value in zip(names, losses.mean(dim=0))}

    @torch.no_grad()
    def adapted_outer_loss(self, batch: MetaBatch) -> float:
        """Mean outer loss after adaptation, alone: what validation needs when each task adapts on another's video."""
        params = self.params()

        def task_eval(s_in: tuple, s_tg: tuple, q_in: tuple, q_tg: tuple) -> tuple[Tensor]:
            adapted, _ = self._adapt(params, s_in, s_tg, create_graph=False)
            return (self._outer(adapted, q_in, q_tg),)

        (losses,) = self._map_tasks(task_eval, batch)
        return float(losses.mean())

    def _task_losses(self) -> Callable[..., tuple[Tensor, Tensor]]:
        """Per-task function: (post-adaptation outer loss, inner losses before each step)."""
        params = self.params()
        create_graph = not self.cfg.first_order
        plain_autograd = self._fast_second_order()

        def task_losses(s_in: tuple, s_tg: tuple, q_in: tuple, q_tg: tuple) -> tuple[Tensor, Tensor]:
            adapted, inner = self._adapt(params, s_in, s_tg, create_graph, plain_autograd)
            return self._outer(adapted, q_in, q_tg), inner

        return task_losses

    def _loss_stats(self, outer: Tensor, inner: Tensor) -> dict[str, Tensor]:
        stats = {"outer_loss": outer.mean().detach()}
        if self.cfg.inner_steps:
            stats["inner_loss_pre"] = inner[:, 0].mean().detach()
        return stats

    def _backward_per_task(self, batch: MetaBatch) -> dict[str, Tensor]:
        """``meta_loss(batch)[0].backward()`` with one task's graph alive at a time (the task loop)."""
        self._check_first_order()
        task_losses = self._task_losses()
        self.optimizer.zero_grad(set_to_none=True)
        outer, inner = [], []
        for i in range(batch.n_tasks):
            with self._conv_kernels():
                task_outer, task_inner = task_losses(*batch.task(i))
            try:
                _check_finite("inner loss", task_inner)
                _check_finite("outer loss (post-adaptation)", task_outer)
            except NonFiniteLossError:
                self.optimizer.zero_grad(set_to_none=True)
                raise
            (task_outer / batch.n_tasks).backward()
            outer.append(task_outer.detach())
            inner.append(task_inner.detach())
        return self._loss_stats(torch.stack(outer), torch.stack(inner))

    def _fast_second_order(self) -> bool:
        """Second order over the task loop on CPU: inner gradients by ``torch.autograd.grad``."""
        second_order = self.cfg.inner_steps > 0 and not self.cfg.first_order
        return second_order and self._task_batching() == "loop" and self.inner_lrs.device.type == "cpu"

    def _conv_kernels(self) -> contextlib.AbstractContextManager:
        """Conv derivatives that avoid PyTorch's slow conv double backward (``FastConvDerivatives``, ~20% of a full
        second-order step), when conv weights are adapted; otherwise they only add dispatch costs (ANIL)."""
        return FastConvDerivatives() if self._fast_second_order() and self._adapts_conv else contextlib.nullcontext()

    def _task_batching(self) -> str:
        if self.cfg.task_batching == "auto":
            return "vmap" if self.inner_lrs.device.type == "cuda" else "loop"
        return self.cfg.task_batching

    def _adapt(
        self, params: Params, inputs: tuple, targets: tuple, create_graph: bool, plain_autograd: bool = False
    ) -> tuple[Params, Tensor]:
        """``inner_steps`` clipped SGD steps; returns the adapted parameters and the inner loss before each step.

        ``plain_autograd`` (second order, outside any torch.func transform) takes the inner gradient with
        ``torch.autograd.grad`` instead of ``torch.func.grad``: the same numbers, but the conv Functions of
        ``FastConvDerivatives`` are then not re-wrapped at a functorch level (~1 ms of Python per call).
        """
        losses = []
        for _ in range(self.cfg.inner_steps):
            if plain_autograd:
                loss = self._inner(params, inputs, targets)
                values = torch.autograd.grad(loss, list(params.values()), create_graph=True, materialize_grads=True)
                grads = dict(zip(params, values))
            else:
                with torch.enable_grad() if create_graph else torch.no_grad():
                    # torch.func.grad differentiates even under no_grad; no_grad only stops the outer graph.
                    grads, loss = grad_and_value(self._inner)(params, inputs, targets)
            clip = self.cfg.inner_grad_clip
            params = {
                name: p - lr * (grads[name] if clip is None else grads[name].clamp(-clip, clip))
                for (name, p), lr in zip(params.items(), self.inner_lrs)
            }
            losses.append(loss)
        return params, torch.stack(losses) if losses else next(iter(params.values())).new_zeros(0)

    def _inner(self, params: Params, inputs: tuple, targets: tuple) -> Tensor:
        return self.inner_loss(functional_call(self.model, params, inputs), *targets)

    def _outer(self, params: Params, inputs: tuple, targets: tuple) -> Tensor:
        return self.outer_loss(functional_call(self.model, params, inputs), *targets)

    def _map_tasks(self, fn: Callable[..., tuple[Tensor, ...]], batch: MetaBatch) -> tuple[Tensor, ...]:
        """``fn`` over the tasks, outputs stacked along a new first dimension: with ``vmap`` or a Python loop."""
        if self._task_batching() == "vmap":
            return vmap(fn)(*batch.parts())
        per_task = [fn(*batch.task(i)) for i in range(batch.n_tasks)]
        return tuple(torch.stack(outputs) for outputs in zip(*per_task))

    def _grad_norms(self) -> dict[str, Tensor]:
        groups: dict[str, Iterable[Tensor]] = {"model": self.model.parameters()}
        if isinstance(self.inner_loss, nn.Module):
            groups["inner_loss"] = self.inner_loss.parameters()
        if self.cfg.learn_inner_lr:
            groups["inner_lr"] = [self.inner_lrs]
        zero = self.inner_lrs.new_zeros(())
        norms = {
            f"grad_norm_{key}": _norm([p.grad for p in ps if p.grad is not None], zero) for key, ps in groups.items()
        }
        norms["grad_norm"] = _norm(list(norms.values()), zero)
        return norms

    def _check_first_order(self) -> None:
        if self.cfg.first_order and isinstance(self.inner_loss, nn.Module):
            if any(p.requires_grad for p in self.inner_loss.parameters()):
                raise ValueError(
                    "first_order=True gives the learned inner loss exactly zero meta-gradient (its weights reach "
                    "the outer loss only through the inner gradient, which first order treats as a constant). "
                    "Use second order to learn it, or freeze it explicitly: inner_loss.requires_grad_(False)."
                )


def _adapted_names(model: nn.Module, adapt_only: tuple[str, ...]) -> list[str]:
    """Names of the trainable parameters matched by ``adapt_only`` (a name or a dotted prefix); all if empty."""
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    if not adapt_only:
        return names
    matches = {key: [n for n in names if n == key or n.startswith(key + ".")] for key in adapt_only}
    unknown = [key for key, found in matches.items() if not found]
    if unknown:
        tops = sorted({n.split(".")[0] for n in names})
        raise ValueError(f"adapt_only names {unknown} match no trainable parameter of the model (its top-level names: {tops})")
    return [n for n in names if any(n in found for found in matches.values())]


def _adapts_a_conv(model: nn.Module, adapted: list[str]) -> bool:
    """Whether a conv layer's own parameters are adapted (so second order differentiates a conv backward).

    A speed choice only: with an adapted parameter upstream of a conv but none of its own (rare), the fast
    kernels would also help and are not used; the gradients are the same either way.
    """
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    conv_params = {id(p) for m in model.modules() if isinstance(m, convs) for p in m.parameters()}
    return any(id(p) in conv_params for name, p in model.named_parameters() if name in adapted)


def _norm(tensors: list[Tensor], zero: Tensor) -> Tensor:
    if not tensors:
        return zero
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.detach()) for t in tensors]))


def _check_finite(name: str, value: Tensor) -> None:
    if not torch.isfinite(value).all():
        raise NonFiniteLossError(
            f"{name} is not finite ({value.detach().flatten().tolist()[:8]}); parameters were left unchanged. "
            "Lower the learning rates or the inner-gradient clip, or check the data."
        )
