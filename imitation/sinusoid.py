"""MAML's sinusoid regression (Finn, Abbeel, Levine 2017) run through the same ``MetaLearner`` as the policy.

Tasks: y = A sin(x - phase), A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5]; K support points, one inner SGD
step on their MSE. The baseline is the same MLP pre-trained on all tasks (no inner loop, ``inner_steps=0``)
and then fine-tuned with the same inner step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imitation.layers import init_parameters
from imitation.maml import MetaBatch, MetaConfig, MetaLearner


@dataclass(frozen=True)
class SinusoidConfig:
    """Defaults are the paper's (70k meta-iterations); tests use far fewer."""

    meta_iterations: int = 70_000  # Adam steps, for MAML and for the pre-trained baseline alike
    meta_batch: int = 25  # tasks per meta-iteration
    k_shot: int = 10  # support points (and training query points) per task
    inner_lr: float = 0.01  # the one inner SGD step, in training and when fine-tuning at test time
    meta_lr: float = 1e-3
    hidden: tuple[int, ...] = (40, 40)  # ReLU MLP 1 -> 40 -> 40 -> 1
    test_tasks: int = 600  # fixed evaluation tasks
    test_points: int = 100  # query points per evaluation task
    task_batching: str = "vmap"  # vmap beats the loop for 25 tiny tasks


def mlp(hidden: tuple[int, ...], generator: torch.Generator) -> nn.Sequential:
    sizes = (1, *hidden)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return init_parameters(nn.Sequential(*layers, nn.Linear(sizes[-1], 1)), generator)


def sample_tasks(n_tasks: int, k_support: int, k_query: int, generator: torch.Generator) -> MetaBatch:
    """``n_tasks`` random sinusoids with support and query points: inputs (n, k, 1), targets (n, k, 1)."""
    amplitude = 0.1 + 4.9 * torch.rand(n_tasks, 1, 1, generator=generator)
    phase = math.pi * torch.rand(n_tasks, 1, 1, generator=generator)
    x = -5.0 + 10.0 * torch.rand(n_tasks, k_support + k_query, 1, generator=generator)
    y = amplitude * torch.sin(x - phase)
    return MetaBatch(
        support_inputs=(x[:, :k_support],),
        support_targets=(y[:, :k_support],),
        query_inputs=(x[:, k_support:],),
        query_targets=(y[:, k_support:],),
    )


def mse(prediction: Tensor, target: Tensor) -> Tensor:
    return F.mse_loss(prediction, target)


def meta_config(cfg: SinusoidConfig, inner_steps: int = 1) -> MetaConfig:
    return MetaConfig(
        inner_steps=inner_steps,
        inner_lr=cfg.inner_lr,
        inner_grad_clip=None,
        task_batching=cfg.task_batching,
        meta_lr=cfg.meta_lr,
    )


def train(cfg: SinusoidConfig, inner_steps: int, generator: torch.Generator) -> nn.Module:
    """MAML (``inner_steps=1``) or the pre-trained baseline (``inner_steps=0``) from the same initialisation."""
    learner = MetaLearner(mlp(cfg.hidden, generator), mse, mse, meta_config(cfg, inner_steps))
    for _ in range(cfg.meta_iterations):
        learner.meta_step(sample_tasks(cfg.meta_batch, cfg.k_shot, cfg.k_shot, generator))
    return learner.model


def evaluate(model: nn.Module, cfg: SinusoidConfig, tasks: MetaBatch) -> dict[str, float]:
    """Query MSE before and after one inner step on the K support points of each test task."""
    metrics = MetaLearner(model, mse, mse, meta_config(cfg)).evaluate(tasks)
    return {"pre_mse": metrics["outer_loss_pre"], "post_mse": metrics["outer_loss_post"]}


def run(cfg: SinusoidConfig, seed: int) -> dict[str, dict[str, float]]:
    """Train MAML and the baseline from ``seed`` and evaluate both on the same fixed test tasks."""
    tasks = sample_tasks(cfg.test_tasks, cfg.k_shot, cfg.test_points, torch.Generator().manual_seed(10_000 + seed))
    maml = train(cfg, 1, torch.Generator().manual_seed(seed))
    pretrained = train(cfg, 0, torch.Generator().manual_seed(seed))
    return {"maml": evaluate(maml, cfg, tasks), "pretrained": evaluate(pretrained, cfg, tasks)}
