"""Typed settings of a collection run: the structured configs behind `oneshot-collect` (Hydra's source of truth).

`launch/collect.py` registers these dataclasses in Hydra's ConfigStore; the YAML files under `conf/` only pick
values. The same dataclasses are the typed input of `demos.collect.collect`, so the tool works without Hydra too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import MISSING

from demos.format import sha256_file


@dataclass
class EnvConfig:
    """How the environment is built (the keywords of `envs.make`). Recorded in the manifest."""

    family: str = "reach"  # task family: reach | push | pick_place
    image_size: int = 64  # side of the square camera images, in pixels (32-256)
    robot_visuals: str = "lowpoly"  # robot meshes: lowpoly (fast) | stock (original Panda meshes, ~10x slower)
    renderer: str = "tiny"  # tiny (CPU TinyRenderer) | egl (GPU; falls back to tiny): the one used is recorded
    # also record the robot camera's depth with every demo frame (uint8 levels: envs.core.encode_depth), for a policy
    # that reads it (policy.query_depth); the human videos never have depth
    depth: bool = False


@dataclass
class CollectConfig:
    """One collection job: a split of tasks (or one shard of it) written into a dataset folder."""

    env: EnvConfig = field(default_factory=EnvConfig)  # the environment (config group `env`)
    out: str = MISSING  # the dataset folder (created; other splits of the same env may live in it too)
    split: str = "train"  # which object identities and seed stream the tasks come from: train | val | test | test_ood
    num_tasks: int = 10  # tasks in this split (the first num_tasks distinct tasks of the split's stream)
    demos_per_task: int = 1  # successful robot demonstrations kept per task
    videos_per_task: int = 1  # successful human-proxy videos kept per task
    base_seed: int = 0  # root of every seed of the dataset (tasks, demos, videos): see demos/seeds.py, 0-65535
    # each drawn object set once per choice of target (reach: 3 tasks per set): the scenes of the data then never tell
    # the target, even to a model that memorises them; only the video does (see docs/results.md)
    all_targets: bool = False
    # with all_targets: the tasks of one object set share their robot demos' seeds, so each robot scene (arrangement
    # and start) is recorded once per target. Without it, every demo's scene is unique and a model can memorise which
    # target goes with which scene; with it, the same first frame leads to every target, and only the video can say
    # which (the human videos keep their own seeds).
    same_scenes: bool = False
    # std of Gaussian noise added to the expert's x, y, z action while a demo is executed (action units, 1 = 3 cm per
    # step); the demo records the clean action (DART): the expert's corrections from off-path states. 0: no noise
    demo_noise: float = 0.0
    # DAgger-style demos, kept beside the expert's: a trained policy (the checkpoint `driver`), adapted on one of the
    # task's videos, drives the arm for the first s steps (s uniform in [0, driver_max_fraction x episode length]), then
    # the expert (with demo_noise) takes over; the expert's action is recorded at every step, and the demo is kept when
    # the task succeeds. The data then hold the expert's answer in the states a policy drifts into, which neither
    # the expert's own path nor DART's small noise visit.
    driven_demos_per_task: int = 0
    driver: Optional[str] = None  # the checkpoint whose policy drives the driven demos (oneshot-train's, same env)
    driver_max_fraction: float = 0.5  # the policy drives at most this fraction of a driven demo's steps
    max_failures: int = 20  # failed episodes of one kind for one task after which that task is skipped (and recorded)
    tasks_per_shard: int = 10  # consecutive tasks per HDF5 file: the unit of parallel work and of resuming
    compression: str = "gzip"  # HDF5 filter for the frames: gzip (level 4, portable) | lzf (h5py only) | none
    shard: int = 0  # this job's index when num_shards jobs share the split (Hydra multirun: -m shard=0,1,2,3)
    num_shards: int = 1  # how many jobs share the split; job i writes the files whose index % num_shards == i
    workers: int = 0  # worker processes in this job; 0 means one per CPU core, 1 runs in-process
    progress: bool = True  # show a progress bar (tqdm) on stderr


def env_plan(env: EnvConfig) -> dict:
    """The environment's settings as recorded; `depth` only when on, so datasets made before it match their plans."""
    return {k: v for k, v in asdict(env).items() if k != "depth" or v}


def plan_of(cfg: CollectConfig) -> dict:
    """The settings that define a split's contents; a resumed or sharded job must agree on all of them."""
    return {
        "env": env_plan(cfg.env),
        "split": cfg.split,
        "num_tasks": cfg.num_tasks,
        "demos_per_task": cfg.demos_per_task,
        "videos_per_task": cfg.videos_per_task,
        "base_seed": cfg.base_seed,
        "max_failures": cfg.max_failures,
        "tasks_per_shard": cfg.tasks_per_shard,
        "compression": cfg.compression,
    } | ({"all_targets": True} if cfg.all_targets else {}) | ({"same_scenes": True} if cfg.same_scenes else {}) \
      | ({"demo_noise": cfg.demo_noise} if cfg.demo_noise else {}) | _driven_plan(cfg)
    # (absent when off: the plans of earlier datasets still match)


def _driven_plan(cfg: CollectConfig) -> dict:
    """The driven demos' part of the plan (absent without them), with the driver checkpoint's digest."""
    if not cfg.driven_demos_per_task:
        return {}
    return {"driven_demos_per_task": cfg.driven_demos_per_task, "driver": cfg.driver,
            "driver_sha256": sha256_file(Path(cfg.driver)), "driver_max_fraction": cfg.driver_max_fraction}
