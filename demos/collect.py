"""Collect a split of tasks: robot demonstrations and human-proxy videos, written as HDF5 shards.

The work unit is a shard (`tasks_per_shard` consecutive tasks). A shard's content depends only on the plan and
its index: it is made in a fresh environment, tasks and episodes in a fixed order, every seed from
`demos.seeds`. So resuming, changing the number of workers, or splitting a split over Hydra multirun jobs
gives the same bytes.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm import tqdm

import envs
from demos.config import CollectConfig, env_plan, plan_of
from demos.format import code_version, num_shard_files, shard_name
from demos.manifest import prepare_output, update_manifest
from demos.pool import report, run_spawned
from demos.seeds import MAX_TASKS, split_tasks, stream_seed, targets_per_set
from demos.shards import Demo, TaskEpisodes, Video, remove_stale_temporaries, write_shard

log = logging.getLogger(__name__)
Progress = Callable[[str, bool], None]  # (kind, kept) after every episode
Actor = Callable[[dict[str, np.ndarray]], np.ndarray]  # observation -> action (4,), for one episode
# A trained policy for driven demos: the task's video (T', H, W, 3) uint8 -> that policy, adapted on it, as an Actor.
Driver = Callable[[np.ndarray], Actor]
# checkpoint path, env config (dict of EnvConfig) -> its Driver; built once per shard job, in the worker (picklable:
# a module-level function). demos knows nothing of learning: `oneshot-collect` passes imitation's.
DriverFactory = Callable[[str, dict], Driver]


@dataclass
class ShardResult:
    """What one shard job made: a summary for the job's report (the shard's own metadata is in the file)."""

    file: str
    tasks: int = 0
    skipped_tasks: int = 0
    kept: dict[str, int] = field(default_factory=lambda: {"demo": 0, "video": 0})
    attempts: dict[str, int] = field(default_factory=lambda: {"demo": 0, "video": 0})
    frames: int = 0


@dataclass
class CollectReport:
    """The outcome of a collection job, for the summary line and for benchmarks."""

    shards_done: list[ShardResult]
    shards_present: int  # complete shards found from earlier runs (resumed) or other jobs
    seconds: float
    manifest: Path | None  # written when every shard of the split exists

    def total(self, key: str, kind: str | None = None) -> int:
        return sum(getattr(r, key)[kind] if kind else getattr(r, key) for r in self.shards_done)

    def summary(self) -> str:
        tasks, skipped, frames, s = self.total("tasks"), self.total("skipped_tasks"), self.total("frames"), max(self.seconds, 1e-9)
        kept = {k: f"{self.total('kept', k)}/{self.total('attempts', k)}" for k in ("demo", "video")}
        lines = [f"collected {len(self.shards_done)} shards ({tasks} tasks, {skipped} of them skipped) in {s:.1f} s; "
                 f"{self.shards_present} shards were already complete",
                 f"throughput: {60 * (tasks - skipped) / s:.1f} tasks/min kept, {frames / s:.0f} frames/s kept",
                 f"kept fraction: demos {kept['demo']}, videos {kept['video']} (successful/attempted)"]
        return "\n".join(lines)


# ----- one task, one shard ----------------------------------------------------------------------------------
DART_STREAM = 0x0DA7  # seeds the demo's action noise apart from the env's own draws of the same seed
HANDOVER_STREAM = 0x0D12  # seeds a driven demo's handover step apart from its noise


def make_env(cfg: CollectConfig) -> gym.Env:
    e = cfg.env
    return envs.make(e.family, split=cfg.split, image_size=e.image_size, robot_visuals=e.robot_visuals,
                     renderer=e.renderer, depth=e.depth)


def record_demo(env: gym.Env, task: envs.TaskSpec, seed: int, attempt: int, noise: float = 0.0,
                driver: Actor | None = None, handover: int = 0) -> Demo | None:
    """One expert-labelled episode to the time limit; None when it fails.

    With ``noise`` > 0 the arm executes the expert's action plus Gaussian noise of that std on x, y, z (DART, Laskey
    et al. 2017), while the demo records the expert's clean action: the data then holds the expert's corrections
    from states a little off its own path, which a cloned policy visits and a noiseless expert never does.
    With a ``driver`` (a driven demo, DAgger-like: Ross et al. 2011) the driver's action is executed instead for the
    first ``handover`` steps, and the expert's action is still what the demo records, there too.
    """
    obs, info = env.reset(seed=seed, options={"task": task})
    perturb = np.random.default_rng([seed, DART_STREAM])
    images, states, actions, target_positions, depths = [], [], [], [], []
    done = False
    while not done:
        action = env.unwrapped.expert_action()
        images.append(obs["image"])
        if "depth" in obs:
            depths.append(obs["depth"])
        states.append(obs["state"])
        actions.append(action)
        target_positions.append(env.unwrapped.privileged_view().target_position)
        if driver is not None and len(actions) <= handover:
            executed = np.clip(np.asarray(driver(obs), dtype=np.float32), -1.0, 1.0)
        else:
            executed = with_dart_noise(action, perturb, noise)
        obs, _, terminated, truncated, info = env.step(executed)
        done = terminated or truncated
    if not info["is_success"]:
        return None
    return Demo(np.stack(images), np.stack(states).astype(np.float32), np.stack(actions).astype(np.float32),
                np.stack(target_positions).astype(np.float32), seed, attempt,
                driven_steps=None if driver is None else handover, depth=np.stack(depths) if depths else None)


def record_driven_demo(env: gym.Env, task: envs.TaskSpec, seed: int, attempt: int, noise: float, driver: Actor,
                       max_fraction: float) -> Demo | None:
    """A driven demo: the driver acts for a number of first steps drawn from the seed, then the expert (`record_demo`)."""
    most = int(max_fraction * env.unwrapped.max_episode_steps)
    handover = int(np.random.default_rng([seed, HANDOVER_STREAM]).integers(0, most + 1))
    return record_demo(env, task, seed, attempt, noise, driver, handover)


def with_dart_noise(action: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """The action the arm executes: the expert's, plus Gaussian noise of std `noise` on x, y, z (none drawn at 0)."""
    executed = action.copy()
    if noise > 0:
        executed[:3] = np.clip(executed[:3] + rng.normal(0.0, noise, 3), -1.0, 1.0)
    return executed


def record_video(env: gym.Env, seed: int, attempt: int) -> Video | None:
    """One human-proxy video of the env's current task; None when the human did not achieve it."""
    frames, info = env.unwrapped.render_human_video(seed=seed, max_attempts=1)  # retries are ours: next seed of the stream
    if not info["task_achieved"]:
        return None
    return Video(frames, seed, attempt, [float(x) for x in info["camera_eye"]])


def collect_task(env: gym.Env, cfg: CollectConfig, index: int, task: envs.TaskSpec, progress: Progress,
                 driver: Driver | None = None) -> TaskEpisodes:
    """The demos, then the videos, then the driven demos of one task; each failure retries with the next attempt of
    its stream. Driven demos (after the expert's in the task's list of demos) count as demos in the bookkeeping."""
    out = TaskEpisodes(index=index, spec=task.to_dict(), task_id=task.task_id())
    driven: list[Demo] = []

    def drive(seed: int, attempt: int) -> Demo | None:
        watched = out.videos[len(driven) % len(out.videos)].frames
        return record_driven_demo(env, task, seed, attempt, cfg.demo_noise, driver(watched), cfg.driver_max_fraction)

    plan = (("demo", "demo", cfg.demos_per_task, out.demos, lambda s, a: record_demo(env, task, s, a, cfg.demo_noise)),
            ("video", "video", cfg.videos_per_task, out.videos, lambda s, a: record_video(env, s, a)),
            ("driven", "demo", cfg.driven_demos_per_task, driven, drive))
    for stream, kind, wanted, kept, record in plan:
        attempt = 0
        while len(kept) < wanted:
            if out.failures[kind] > cfg.max_failures:
                log.warning("task %d (%s) skipped: more than %d failed %ss", index, out.task_id, cfg.max_failures, stream)
                return TaskEpisodes(index=index, spec=out.spec, task_id=out.task_id, failures=out.failures, skipped=True)
            episode = record(stream_seed(cfg.base_seed, cfg.split, stream_index(cfg, index, stream), stream, attempt), attempt)
            attempt += 1
            if episode is None:
                out.failures[kind] += 1
            else:
                kept.append(episode)
            progress(kind, episode is not None)
    out.demos += driven
    return out


def stream_index(cfg: CollectConfig, index: int, kind: str) -> int:
    """Whose seed stream task ``index`` draws its ``kind`` episodes from: its own, or (same_scenes demos, driven too)
    its set's."""
    if kind in ("demo", "driven") and cfg.same_scenes:
        return index - index % targets_per_set(cfg.env.family)  # the first task of the object set
    return index


def collect_shard(cfg: CollectConfig, shard: int, tasks: list[envs.TaskSpec], progress: Progress,
                  driver_factory: DriverFactory | None = None) -> ShardResult:
    """Make and write shard `shard` of the split, whose `tasks` these are.

    In a fresh environment (and a freshly loaded driver), so that its content depends on nothing else.
    """
    n = num_shard_files(cfg.num_tasks, cfg.tasks_per_shard)
    path = Path(cfg.out) / shard_name(cfg.split, shard, n)
    first = shard * cfg.tasks_per_shard
    driver = driver_factory(cfg.driver, env_plan(cfg.env)) if cfg.driven_demos_per_task else None
    env = make_env(cfg)
    try:
        episodes = [collect_task(env, cfg, first + i, task, progress, driver) for i, task in enumerate(tasks)]
        env_info = {"renderer": env.unwrapped.renderer, "max_episode_steps": env.unwrapped.max_episode_steps,
                    "success_rule": env.unwrapped.family.success_rule}
    finally:
        env.close()
    meta = {"plan": plan_of(cfg), "shard": shard, "num_shards": n, "env_info": env_info, "code_version": code_version()}
    remove_stale_temporaries(path)
    if not write_shard(path, episodes, meta, cfg.compression):
        log.warning("%s was written by another job meanwhile (same seeds, same content): kept that one", path)
    result = ShardResult(file=path.name)
    for t in episodes:
        result.tasks += 1
        result.skipped_tasks += t.skipped
        for kind, kept in (("demo", t.demos), ("video", t.videos)):
            result.kept[kind] += len(kept)
            result.attempts[kind] += len(kept) + t.failures[kind]
        result.frames += sum(len(d.actions) for d in t.demos) + sum(len(v.frames) for v in t.videos)
    return result


# ----- the job ----------------------------------------------------------------------------------------------
def check_config(cfg: CollectConfig) -> None:
    if cfg.env.family not in envs.FAMILIES:
        raise ValueError(f"env.family must be one of {', '.join(envs.FAMILIES)}, got {cfg.env.family!r}")
    if cfg.split not in envs.SPLITS:
        raise ValueError(f"split must be one of {', '.join(envs.SPLITS)}, got {cfg.split!r}")
    lo, hi = envs.IMAGE_SIZE_RANGE
    if not lo <= cfg.env.image_size <= hi:
        raise ValueError(f"env.image_size must be in [{lo}, {hi}], got {cfg.env.image_size}")
    for name in ("num_tasks", "demos_per_task", "videos_per_task", "tasks_per_shard", "num_shards"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.num_tasks > MAX_TASKS:
        raise ValueError(f"num_tasks must be at most {MAX_TASKS}, got {cfg.num_tasks}")
    if not 0 <= cfg.shard < cfg.num_shards:
        raise ValueError(f"shard must be in [0, num_shards={cfg.num_shards}), got {cfg.shard}")
    if cfg.workers < 0 or cfg.max_failures < 0:
        raise ValueError("workers and max_failures must be >= 0")
    if cfg.compression not in ("gzip", "lzf", "none"):
        raise ValueError(f"compression must be gzip, lzf or none, got {cfg.compression!r}")
    if not 0.0 <= cfg.demo_noise <= 1.0:
        raise ValueError(f"demo_noise is a std in action units (|action| <= 1): it must be in [0, 1], got {cfg.demo_noise}")
    if cfg.same_scenes and not cfg.all_targets:
        raise ValueError("same_scenes=true shares robot scenes between the tasks of one object set: it needs all_targets=true")
    if cfg.driven_demos_per_task < 0:
        raise ValueError(f"driven_demos_per_task must be >= 0, got {cfg.driven_demos_per_task}")
    if cfg.driven_demos_per_task and not (cfg.driver and Path(cfg.driver).is_file()):
        raise ValueError(f"driven_demos_per_task={cfg.driven_demos_per_task} needs driver=<a checkpoint file>, got {cfg.driver!r}")
    if not 0.0 <= cfg.driver_max_fraction <= 1.0:
        raise ValueError(f"driver_max_fraction is a fraction of the episode: it must be in [0, 1], got {cfg.driver_max_fraction}")


def collect(cfg: CollectConfig, driver_factory: DriverFactory | None = None) -> CollectReport:
    """Collect this job's shards of a split into `cfg.out`, resuming what earlier runs left, then join the manifest.

    `driver_factory` builds the policy of the driven demos (needed only with driven_demos_per_task > 0); it is
    called once here, so that a checkpoint that does not fit the env fails before any work.
    """
    check_config(cfg)
    if cfg.driven_demos_per_task:
        if driver_factory is None:
            raise ValueError("driven demos need a driver factory (oneshot-collect passes the trained policy's)")
        driver_factory(cfg.driver, env_plan(cfg.env))

    root = Path(cfg.out)
    prepare_output(root, cfg)
    n = num_shard_files(cfg.num_tasks, cfg.tasks_per_shard)
    mine = [k for k in range(n) if k % cfg.num_shards == cfg.shard]
    todo = [k for k in mine if not (root / shard_name(cfg.split, k, n)).exists()]
    log.info("%s/%s: %d tasks in %d shards; this job (shard %d of %d) owns %d, %d already complete",
             cfg.env.family, cfg.split, cfg.num_tasks, n, cfg.shard, cfg.num_shards, len(mine), len(mine) - len(todo))
    start = time.perf_counter()
    tasks = split_tasks(cfg.base_seed, cfg.env.family, cfg.split, cfg.num_tasks, cfg.all_targets)
    work = {k: tasks[k * cfg.tasks_per_shard:(k + 1) * cfg.tasks_per_shard] for k in todo}
    results = _run(cfg, work, driver_factory)
    report = CollectReport(results, len(mine) - len(todo), time.perf_counter() - start, None)
    report.manifest = update_manifest(root)
    if report.manifest is None:
        log.info("not every shard of the split exists yet: the last job to finish writes manifest.json "
                 "(or run `oneshot-data join %s`)", root)
    return report


def _run(cfg: CollectConfig, work: dict[int, list[envs.TaskSpec]], driver_factory: DriverFactory | None) -> list[ShardResult]:
    """Collect the shards of `work` (shard index -> its tasks) in-process or in a pool of workers."""
    if not work:
        return []
    workers = min(cfg.workers or os.cpu_count() or 1, len(work))
    episodes = sum(map(len, work.values())) * (cfg.demos_per_task + cfg.videos_per_task + cfg.driven_demos_per_task)
    with tqdm(total=episodes, unit="episode", disable=not cfg.progress, file=sys.stderr, smoothing=0.05) as bar:
        failed = {"demo": 0, "video": 0}

        def progress(kind: str, kept: bool) -> None:
            if kept:
                bar.update()
            else:
                failed[kind] += 1
                bar.set_postfix(failed_demos=failed["demo"], failed_videos=failed["video"], refresh=False)

        if workers == 1:
            return [collect_shard(cfg, k, tasks, progress, driver_factory) for k, tasks in work.items()]
        return _run_pool(cfg, work, workers, progress, driver_factory)


def _run_pool(cfg: CollectConfig, work: dict[int, list[envs.TaskSpec]], workers: int, progress: Progress,
              driver_factory: DriverFactory | None) -> list[ShardResult]:
    """Shards in `workers` spawned processes; progress comes back through `demos.pool.report`."""
    jobs = [(cfg, k, tasks, driver_factory) for k, tasks in work.items()]
    results = run_spawned(workers, _pool_shard, jobs, progress)
    return sorted(results, key=lambda r: r.file)


def _pool_shard(cfg: CollectConfig, shard: int, tasks: list[envs.TaskSpec], driver_factory: DriverFactory | None) -> ShardResult:
    return collect_shard(cfg, shard, tasks, report, driver_factory)
