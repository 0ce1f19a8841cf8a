"""Checkpoints that describe themselves (the robomimic lesson): a policy and its environment rebuild from the file.

A checkpoint holds the weights of the policy, the learned loss and the inner learning rates (one MetaLearner
state dict), the optimizer state, the step, RNG states, every config needed to rebuild the model, the env
keywords, the episode length the model was trained on, the dataset's manifest digest, the tensor shapes and the
action gain it is deployed with (1 unless `set_action_gain` wrote another).
Writes are atomic (temporary file + rename) and `last.pt` in the folder points to the newest one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from imitation.adaptation_loss import AdaptationLossConfig
from imitation.bc import BCLossConfig, build_imitation_learner
from imitation.maml import MetaConfig, MetaLearner
from imitation.policy import PolicyConfig

CHECKPOINT_FORMAT = "oneshot-checkpoint"
CHECKPOINT_VERSION = 1
LAST = "last.pt"


@dataclass
class ModelSpec:
    """Everything that defines the model's shape and its meta-learning, as plain dataclasses."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    adaptation_loss: AdaptationLossConfig = field(default_factory=AdaptationLossConfig)
    bc: BCLossConfig = field(default_factory=BCLossConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)

    def to_dict(self) -> dict:
        return {name: asdict(getattr(self, name)) for name in ("policy", "adaptation_loss", "bc", "meta")}

    @staticmethod
    def from_dict(d: dict) -> "ModelSpec":
        return ModelSpec(
            policy=_dataclass_from(PolicyConfig, d["policy"]),
            adaptation_loss=_dataclass_from(AdaptationLossConfig, d["adaptation_loss"]),
            bc=_dataclass_from(BCLossConfig, d["bc"]),
            meta=_dataclass_from(MetaConfig, d["meta"]),
        )


@dataclass
class CheckpointInfo:
    """The metadata stored beside the weights."""

    step: int
    model: ModelSpec
    env: dict[str, Any]  # keywords of envs.make: family, image_size, robot_visuals, renderer
    episode_length: int  # frames per demo the model was trained on (videos are resampled to it)
    dataset: dict[str, Any]  # path, manifest_sha256, splits used
    train_config: dict[str, Any]  # the resolved training config (plain containers)
    git_revision: str = "unknown"
    action_gain: float = 1.0  # deployment: the policy's action is multiplied by it before the clip (set_action_gain)


def _dataclass_from(cls: type, values: dict) -> Any:
    """Rebuild a frozen config dataclass, turning lists (from YAML/JSON) back into tuples where the field is one."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            v = values[f.name]
            kwargs[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)


def build_learner(spec: ModelSpec, seed: int = 0) -> MetaLearner:
    return build_imitation_learner(spec.policy, spec.adaptation_loss, spec.bc, spec.meta,
                                   generator=torch.Generator().manual_seed(seed))


def save_checkpoint(path: str | Path, learner: MetaLearner, info: CheckpointInfo, rng_state: dict | None = None) -> Path:
    """Write atomically (temporary name, fsync, rename) and point `last.pt` in the same folder at it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "step": info.step,
        "learner": learner.state_dict(),
        "optimizer": learner.optimizer.state_dict(),
        "model": info.model.to_dict(),
        "env": info.env,
        "episode_length": info.episode_length,
        "dataset": info.dataset,
        "train_config": info.train_config,
        "git_revision": info.git_revision,
        "action_gain": info.action_gain,
        "shapes": {
            "image": [*info.model.policy.image_size, info.model.policy.image_channels],
            "state": [info.model.policy.state_dim],
            "action": [info.model.policy.action_dim],
            "frames": info.episode_length,
        },
        "rng": rng_state or {},
    }
    with interrupts_deferred():
        _write_atomically(payload, path)
        if path.name != LAST:
            last_tmp = path.with_name(f".{LAST}.{os.getpid()}.tmp")
            shutil.copyfile(path, last_tmp)
            os.replace(last_tmp, path.parent / LAST)
    return path


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until the block has ended, then deliver it.

    A KeyboardInterrupt raised inside ``torch.save`` leaves its zip writer broken, and its clean-up then raises a
    RuntimeError instead: the run would end as a failure, not as an interruption that ``resume=true`` continues.
    Signal handlers can only be set from the main thread; elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if not held or previous == signal.SIG_IGN:
        return
    if callable(previous):
        previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt
    else:  # SIG_DFL, or a handler set outside Python
        raise KeyboardInterrupt


def _write_atomically(payload: dict, path: Path) -> None:
    """Temporary name, fsync, rename: a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def average_checkpoints(paths: list[str | Path], out: str | Path) -> Path:
    """Write the mean of several checkpoints' weights: stochastic weight averaging over a run's late checkpoints.

    Constant-lr Adam leaves a run's late checkpoints scattered around a minimum: at close validation losses their
    rollouts differ a lot (reach: 20% to 83% val success between steps 7500 and 10000), and the mean of their
    weights sits nearer its centre. The checkpoints must come from one model on one env and dataset (same spec, env,
    dataset digest). Every other field, the optimizer state included, is the newest checkpoint's;
    `averaged_from` records the sources and their steps.
    """
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least 2 checkpoints, got {len(paths)}")
    payloads = [read_checkpoint(p) for p in paths]
    newest = max(range(len(payloads)), key=lambda i: payloads[i]["step"])
    reference = payloads[newest]
    for path, payload in zip(paths, payloads):
        for key, what in (("model", "another model"), ("env", "another env"), ("episode_length", "another episode length")):
            if payload[key] != reference[key]:
                raise ValueError(f"{path} has {what} than {paths[newest]}: not one model's checkpoints")
        if payload["dataset"].get("manifest_sha256") != reference["dataset"].get("manifest_sha256"):
            raise ValueError(f"{path} was trained on another dataset than {paths[newest]}")
    averaged = {}
    for name, tensor in reference["learner"].items():
        if not torch.is_floating_point(tensor):  # a counter or an index: nothing to average, it must agree
            if not all(torch.equal(p["learner"][name], tensor) for p in payloads):
                raise ValueError(f"{name} ({tensor.dtype}) differs between the checkpoints: it cannot be averaged")
            averaged[name] = tensor
            continue
        stacked = torch.stack([p["learner"][name].to(torch.float64) for p in payloads])
        if not torch.isfinite(stacked).all():
            raise ValueError(f"{name} is not finite in one of the checkpoints: nothing written")
        averaged[name] = stacked.mean(0).to(tensor.dtype)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically({**reference, "learner": averaged,
                       "averaged_from": [{"path": str(p), "step": int(q["step"])} for p, q in zip(paths, payloads)]}, out)
    return out


def check_action_gain(gain: float) -> None:
    if not (math.isfinite(gain) and gain > 0):
        raise ValueError(f"an action gain must be a finite number > 0, got {gain}")


def set_action_gain(path: str | Path, gain: float, out: str | Path) -> float:
    """Write a copy of a checkpoint that deploys with `gain` (weights and everything else unchanged); returns the gain
    the checkpoint had.

    A behaviour-cloned policy under-shoots where its demos disagree: the squared loss pulls its velocity towards
    their mean, and a closed loop that moves too little per step can stall or run out of time (push, session 23).
    Its deployment can then multiply the action by a gain, chosen on the val split like any hyperparameter
    (`oneshot-eval action_gains=[...]`). The gripper command is read by its sign, which a positive gain keeps.
    """
    check_action_gain(gain)
    payload = read_checkpoint(path)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically({**payload, "action_gain": float(gain)}, out)
    return float(payload.get("action_gain", 1.0))


def grow_into(module: torch.nn.Module, weights: dict[str, torch.Tensor]) -> list[str]:
    """Load a smaller model's ``weights`` into ``module``, which may have more inputs and parameters; returns the
    names of the tensors that grew or are new.

    A tensor the module has and ``weights`` lacks keeps its initial value. One whose last dimension is longer takes
    the old values first: a weight matrix has zeros in its new columns, so new inputs appended at the end of a
    layer's input (as ``PolicyConfig.place_query``'s point) start with no effect and the grown model acts as the old
    one until training gives them weight; a vector (MetaLearner's inner lrs, one per adapted parameter, in
    registration order) keeps its initial values in its new entries. Anything else (a tensor only ``weights`` has,
    another shape) is refused.
    """
    own = module.state_dict()
    unknown = sorted(set(weights) - set(own))
    if unknown:
        raise ValueError(f"the weights have tensors this model lacks: {', '.join(unknown)}")
    grown = []
    for name, value in own.items():
        old = weights.get(name)
        if old is None:
            grown.append(name)
        elif old.shape == value.shape:
            value.copy_(old)
        elif old.dim() == value.dim() >= 1 and old.shape[:-1] == value.shape[:-1] and old.shape[-1] < value.shape[-1]:
            if value.dim() > 1:
                value.zero_()
            value[..., : old.shape[-1]] = old
            grown.append(name)
        else:
            raise ValueError(f"{name}: shape {tuple(old.shape)} cannot grow into {tuple(value.shape)}")
    return grown


def tensors_named(learner: torch.nn.Module, prefixes: Sequence[str], option: str) -> set[str]:
    """The names of the learner's tensors that start with one of ``prefixes`` (each a whole dotted component:
    ``model.fc`` names ``model.fc.0.weight``, not ``model.fcx``); a prefix that names none is refused."""
    names = learner.state_dict().keys()
    chosen = set()
    for prefix in prefixes:
        matched = {name for name in names if name == prefix or name.startswith(prefix + ".")}
        if not matched:
            roots = sorted({".".join(name.split(".")[:2]) for name in names})
            raise ValueError(f"{option}: {prefix!r} names none of the learner's tensors; they start with: "
                             + ", ".join(roots))
        chosen |= matched
    return chosen


def freeze(learner: torch.nn.Module, prefixes: Sequence[str]) -> None:
    """Stop meta-training the parameters named by ``prefixes`` (the optimizer, made later, leaves them out)."""
    frozen = tensors_named(learner, prefixes, "frozen")
    for name, parameter in learner.named_parameters():
        if name in frozen:
            parameter.requires_grad_(False)


def read_checkpoint(path: str | Path) -> dict:
    """The raw payload, checked for format and version, with clear errors for a missing or foreign file."""
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: torch raises several kinds
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} file")
    if payload["version"] > CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {payload['version']}; this code reads up to {CHECKPOINT_VERSION}")
    return payload


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    optimizer: bool = True) -> tuple[MetaLearner, CheckpointInfo, dict]:
    """Rebuild the MetaLearner (weights and optimizer state) and its metadata from the file alone.

    Returns (learner, info, payload); the payload carries the RNG states for an exact resume. With
    ``optimizer=False`` (test time) the optimizer state is not restored, which spares making the optimizer.
    """
    payload = read_checkpoint(path)
    spec = ModelSpec.from_dict(payload["model"])
    learner = build_learner(spec)
    learner.load_state_dict(payload["learner"])
    learner.to(device)
    freeze(learner, payload["train_config"].get("frozen", []))  # as its run was: its optimizer holds the others only
    if optimizer:
        learner.optimizer.load_state_dict(payload["optimizer"])
    info = CheckpointInfo(
        step=int(payload["step"]), model=spec, env=dict(payload["env"]), episode_length=int(payload["episode_length"]),
        dataset=dict(payload["dataset"]), train_config=dict(payload["train_config"]), git_revision=payload["git_revision"],
        action_gain=float(payload.get("action_gain", 1.0)),
    )
    return learner, info, payload
