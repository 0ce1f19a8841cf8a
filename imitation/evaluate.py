"""Simulated evaluation: N held-out tasks x M trials, several methods (and checkpoints) on the same tasks and seeds.

For each task, one demonstration is fixed: a human-proxy video (and, for the MIL reference, one robot demo).
Each method adapts once from it and is then deployed `trials` times, each trial in a new arrangement of the
same task. Every method and checkpoint sees the same tasks, videos and arrangements.

Methods (`EvalConfig.methods`):
  daml        adaptation by the learned loss on the video alone (the product)
  none        the meta-learned initial parameters, no adaptation (should sit near chance: the scene alone does
              not say which object; see `chance_level`)
  robot_demo  the same inner update (lrs, steps, clip) on the behaviour-cloning loss of one robot demo *with*
              actions: the MIL setting, an upper reference
  random      uniform random actions
  expert      the scripted expert (privileged): what the environment allows
`inner_steps=[1, 5]` evaluates daml and robot_demo once per test-time step count ("daml@1", "daml@5").

Where tasks come from:
  dataset=<folder>  the first `num_tasks` tasks of the manifest's `split`; the video and demo are the
                    dataset's first ones (they are demonstrations: their collection seeds do not matter)
  no dataset        `num_tasks` distinct tasks drawn with `envs.sample_task` from the evaluation seed stream;
                    the video is rendered and the demo recorded from that stream too
Seeds. Every draw of an evaluation (task, video, demo, trial arrangement) takes its seed from

    seed = 1 << 62 | eval_seed << 42 | task << 22 | kind << 20 | attempt      (kind: task, video, demo, trial)

Collection seeds (demos/seeds.py) are all below 2**61 (16-bit base seed << 45), so no evaluation episode
ever starts from the seed of an episode that training or model selection could have seen, whatever the
base seeds; and each (task, kind, attempt) draw has its own seed, so the numbers do not depend on the number
of workers or the order in which they finish.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Dict, List, Optional

import gymnasium as gym
import numpy as np
import torch
from omegaconf import MISSING
from tqdm import tqdm

import envs
from demos.collect import record_demo, record_video
from demos.export import write_mp4
from demos.format import DatasetError, code_version, read_manifest
from demos.pool import SpawnedPool, report
from envs.task_spec import NUM_CONTAINERS, NUM_OBJECTS
from imitation.checkpoint import check_action_gain, read_checkpoint
from imitation.eval_report import Row, bar_plot, markdown_table, summarise, write_png
from imitation.maml import Params
from imitation.rollout import (Rollout, expert_actor, load_dataset_task, mean_actor, random_actor, require_one_env, run_episode,
                               side_by_side)
from imitation.tracking import LoggerConfig, RunLogger

log = logging.getLogger(__name__)

METHODS = ("daml", "none", "robot_demo", "random", "expert")
MODEL_METHODS = ("daml", "none", "robot_demo")  # per checkpoint; the others use no model
STEPPED_METHODS = ("daml", "robot_demo")  # take the test-time `inner_steps` variants
NO_CHECKPOINT = "-"
EVAL_FLAG = 1 << 62
EVAL_KINDS = ("task", "video", "demo", "trial")
EVAL_SEED_BITS, TASK_BITS, KIND_BITS, ATTEMPT_BITS = 20, 20, 2, 20
RESULTS, SUMMARY, PLOT, VIDEOS = "results.json", "summary.md", "success.png", "videos"  # in the run folder


def eval_seed(seed: int, task: int, kind: str, attempt: int) -> int:
    """The seed of one evaluation draw (see the module docstring); disjoint from every collection seed."""
    for name, value, bits in (("seed", seed, EVAL_SEED_BITS), ("task", task, TASK_BITS), ("attempt", attempt, ATTEMPT_BITS)):
        if not 0 <= value < 1 << bits:
            raise ValueError(f"evaluation {name} must be in [0, {1 << bits}), got {value}")
    return EVAL_FLAG | seed << 42 | task << 22 | EVAL_KINDS.index(kind) << 20 | attempt


@dataclass
class EvalConfig:
    """One evaluation job (the structured config behind `oneshot-eval`)."""

    checkpoint: Optional[str] = None  # one checkpoint (file, or folder with last.pt), named "model"
    # several, by name (Hydra: +checkpoints.daml=a.pt +checkpoints.linear=b.pt, or ++checkpoints='{daml: a.pt, linear: b.pt}')
    checkpoints: Dict[str, str] = field(default_factory=dict)
    methods: List[str] = field(default_factory=lambda: list(METHODS))  # any of daml none robot_demo random expert
    inner_steps: List[int] = field(default_factory=list)  # test-time inner steps for daml/robot_demo; [] = each checkpoint's own
    # multipliers of the policy's action at deployment, per model method ("daml-x2"); [] = each checkpoint's own
    action_gains: List[float] = field(default_factory=list)
    # ensembles by name: {name: [checkpoint names]}, a `daml` row each whose action is the mean of its members' actions,
    # each member adapted on the same video (its own inner steps, lrs and action gain unless the job sets them)
    ensembles: Dict[str, List[str]] = field(default_factory=dict)
    split: str = "test"  # which object identities: test (never trained on) | test_ood | val (model selection)
    num_tasks: int = 10  # N held-out tasks
    trials: int = 2  # M deployments per task and method, each in a new arrangement
    dataset: Optional[str] = None  # take tasks, videos and demos from this dataset's `split`; None: draw them (seed stream)
    seed: int = 0  # root of the evaluation seed stream (0 .. 2**20-1)
    workers: int = 0  # worker processes; 0 = one per CPU core, 1 = in this process
    videos: int = 1  # side-by-side mp4s per (checkpoint, method): the first trial of the first `videos` tasks
    max_attempts: int = 10  # rendered videos / recorded demos tried per task before the task is skipped
    out: str = MISSING  # the run folder: results.json, summary.md, success.png, videos/, wandb/
    progress: bool = True  # progress bar on stderr
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # group `logger`: wandb (offline, files in out/wandb) | none

    def named_checkpoints(self) -> dict[str, str]:
        named = ({"model": self.checkpoint} if self.checkpoint else {}) | dict(self.checkpoints)
        if not named:
            raise ValueError("give checkpoint=<path> or checkpoints={name: path, ...}")
        return named


@dataclass(frozen=True)
class Variant:
    """A method as evaluated: which checkpoint, which method, how many test-time inner steps."""

    checkpoint: str
    method: str
    inner_steps: Optional[int] = None  # None: the checkpoint's own (or no adaptation)
    video_encoder: bool = False  # the checkpoint is the black-box baseline: "daml" then means its video encoder
    action_gain: Optional[float] = None  # None: the checkpoint's own
    members: tuple[str, ...] = ()  # an ensemble's checkpoints (`checkpoint` is then the ensemble's name)

    @property
    def label(self) -> str:
        if self.video_encoder and self.method == "daml":
            label = "encoder"
        else:
            label = self.method if self.inner_steps is None else f"{self.method}@{self.inner_steps}"
        return label if self.action_gain is None else f"{label}-x{self.action_gain:g}"


def variants(cfg: EvalConfig) -> list[Variant]:
    """Every (checkpoint, method, steps) of the job, in table order: per checkpoint its methods, then the baselines.

    A black-box checkpoint (adaptation_loss.kind=encoder) takes the video through its encoder (label "encoder"),
    and has no inner step: neither robot_demo nor test-time step counts apply to it.
    """
    steps: list[Optional[int]] = list(cfg.inner_steps) or [None]
    gains: list[Optional[float]] = [float(g) for g in cfg.action_gains] or [None]
    out = []
    for name, path in cfg.named_checkpoints().items():
        encoder = is_video_encoder(path)
        for m in cfg.methods:
            if m not in MODEL_METHODS or (encoder and m == "robot_demo"):
                continue
            out += [Variant(name, m, k, encoder, g) for k in (steps if m in STEPPED_METHODS and not encoder else [None])
                    for g in gains]
    if "daml" in cfg.methods:
        out += [Variant(name, "daml", k, False, g, tuple(members)) for name, members in cfg.ensembles.items()
                for k in steps for g in gains]
    return out + [Variant(NO_CHECKPOINT, m) for m in cfg.methods if m not in MODEL_METHODS]


@lru_cache(maxsize=None)
def is_video_encoder(checkpoint: str) -> bool:
    """Whether a checkpoint is the black-box baseline (read once per process)."""
    return read_checkpoint(checkpoint)["model"]["adaptation_loss"].get("kind") == "encoder"


@dataclass(frozen=True)
class TaskPlan:
    """One evaluation task: its spec and where its demonstration comes from."""

    index: int
    spec: dict
    dataset_task: Optional[str] = None  # the task's id in `EvalConfig.dataset`; None: rendered from the seed stream


def chance_level(family: str) -> float:
    """Success of guessing the target (and container) uniformly: what `none` should score if nothing leaks."""
    return 1.0 / (NUM_OBJECTS[family] * max(1, NUM_CONTAINERS[family]))


def check_config(cfg: EvalConfig) -> None:
    unknown = sorted(set(cfg.methods) - set(METHODS))
    if unknown or not cfg.methods:
        raise ValueError(f"methods must be among {', '.join(METHODS)}, got {list(cfg.methods)}")
    if cfg.split not in envs.SPLITS:
        raise ValueError(f"split must be one of {', '.join(envs.SPLITS)}, got {cfg.split!r}")
    if cfg.split == "train":
        log.warning("evaluating on the train split: these objects were seen in training")
    for name in ("num_tasks", "trials", "max_attempts"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if any(k < 0 for k in cfg.inner_steps) or cfg.workers < 0 or cfg.videos < 0:
        raise ValueError("inner_steps, workers and videos must be >= 0")
    for gain in cfg.action_gains:
        check_action_gain(gain)
    named = cfg.named_checkpoints()
    if NO_CHECKPOINT in named:
        raise ValueError(f"{NO_CHECKPOINT!r} is reserved for the methods without a checkpoint")
    for name, members in cfg.ensembles.items():
        unknown = [m for m in members if m not in named]
        if name in named or name == NO_CHECKPOINT or len(set(members)) < 2 or unknown:
            raise ValueError(f"ensemble {name!r}: give at least 2 distinct checkpoint names of this job under a new name "
                             f"(checkpoints: {', '.join(named)}; unknown: {', '.join(unknown) or 'none'})")
    if cfg.out in (MISSING, ""):
        raise ValueError("out=<run folder> is required")
    eval_seed(cfg.seed, 0, "task", 0)


def plan_tasks(cfg: EvalConfig, family: str) -> list[TaskPlan]:
    """The N tasks: the first of a dataset split, or distinct draws from the evaluation seed stream."""
    if cfg.dataset:
        manifest = read_manifest(Path(cfg.dataset))
        if manifest["env"]["config"]["family"] != family:
            raise DatasetError(f"{cfg.dataset} is a {manifest['env']['config']['family']!r} dataset, the checkpoints are {family!r}")
        if cfg.split not in manifest["splits"]:
            raise DatasetError(f"{cfg.dataset} has no split {cfg.split!r} (present: {', '.join(sorted(manifest['splits']))})")
        entries = manifest["splits"][cfg.split]["tasks"]
        if len(entries) < cfg.num_tasks:
            raise DatasetError(f"{cfg.dataset}: split {cfg.split!r} has {len(entries)} tasks, {cfg.num_tasks} were asked for")
        return [TaskPlan(i, t["spec"], t["id"]) for i, t in enumerate(entries[: cfg.num_tasks])]
    plans, seen = [], set()
    for index in range(cfg.num_tasks):
        for attempt in range(1 << ATTEMPT_BITS):
            task = envs.sample_task(np.random.default_rng(eval_seed(cfg.seed, index, "task", attempt)), family, cfg.split)
            if task.task_id() not in seen:
                break
        seen.add(task.task_id())
        plans.append(TaskPlan(index, task.to_dict()))
    return plans


# ----- one task, in a worker ---------------------------------------------------------------------------------
@dataclass
class Demonstration:
    """What each method of a task adapts from."""

    video: np.ndarray  # uint8 (T', H, W, 3), as recorded
    video_source: dict
    # images (with the depth levels as a fourth channel when the env measures them), states, actions (robot_demo only)
    demo: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]
    demo_source: Optional[dict]


class TaskSkipped(Exception):
    """No successful demonstration could be made for a task."""


@dataclass(frozen=True)
class Skipped:
    """A task left out of the evaluation: `results.json`'s `skipped_tasks` entry."""

    task_index: int
    reason: str


def demonstrate(cfg: EvalConfig, plan: TaskPlan, env: gym.Env) -> Demonstration:
    """The task's video (and robot demo): from the dataset, or drawn from the evaluation stream until one succeeds."""
    if plan.dataset_task is not None:
        t = load_dataset_task(cfg.dataset, plan.dataset_task, cfg.split)
        return Demonstration(t.video, t.source, t.demo, t.source)
    task = envs.TaskSpec.from_dict(plan.spec)
    video = demo = None
    for attempt in range(cfg.max_attempts):
        seed = eval_seed(cfg.seed, plan.index, "video", attempt)
        env.reset(seed=seed, options={"task": task})
        if (video := record_video(env, seed, attempt)) is not None:
            break
    if video is None:
        raise TaskSkipped(f"no successful human video in {cfg.max_attempts} attempts")
    for attempt in range(cfg.max_attempts if "robot_demo" in cfg.methods else 0):
        if (demo := record_demo(env, task, eval_seed(cfg.seed, plan.index, "demo", attempt), attempt)) is not None:
            break
    if "robot_demo" in cfg.methods and demo is None:
        raise TaskSkipped(f"no successful expert demo in {cfg.max_attempts} attempts")
    return Demonstration(video.frames, {"source": "rendered", "seed": video.seed, "attempt": video.attempt, "frames": len(video.frames)},
                         (demo.policy_images(), demo.states, demo.actions) if demo else None,
                         {"source": "recorded", "seed": demo.seed, "attempt": demo.attempt} if demo else None)


class Workspace:
    """Per process: the checkpoints' rollouts and one environment per env config, built once and reused."""

    def __init__(self, cfg: EvalConfig) -> None:
        self.rollouts = {name: Rollout.from_checkpoint(path) for name, path in cfg.named_checkpoints().items()}
        self.first = next(iter(self.rollouts.values()))  # the one the demonstrations and the baselines use
        self._envs: dict[str, gym.Env] = {}
        self.split = cfg.split

    def env(self, rollout: Rollout) -> gym.Env:
        key = json.dumps(rollout.info.env, sort_keys=True)
        if key not in self._envs:
            self._envs[key] = rollout.make_env(self.split)
        return self._envs[key]

    def close(self) -> None:
        for env in self._envs.values():
            env.close()


def adapted_params(rollout: Rollout, variant: Variant, demo: Demonstration) -> Params:
    if variant.method == "daml":
        return rollout.adapt(demo.video, variant.inner_steps)
    if variant.method == "robot_demo":
        return rollout.adapt_on_demo(*demo.demo, inner_steps=variant.inner_steps)
    return rollout.initial_params()


def demonstration_job(cfg: EvalConfig, plan: TaskPlan, workspace: Workspace, progress: Callable[[], None]) -> Demonstration | Skipped:
    """The task's demonstration, or why the task is skipped (its episodes then count as done for `progress`)."""
    try:
        return demonstrate(cfg, plan, workspace.env(workspace.first))
    except TaskSkipped as e:
        log.warning("task %d skipped: %s", plan.index, e)
        for _ in range(len(variants(cfg)) * cfg.trials):
            progress()
        return Skipped(plan.index, str(e))


def deploy_job(cfg: EvalConfig, plan: TaskPlan, variant: Variant, demo: Demonstration, workspace: Workspace,
               progress: Callable[[], None]) -> list[dict]:
    """One variant on one task: adapt once from the task's demonstration, deploy `trials` times; the episode records."""
    members = [workspace.rollouts[m] for m in variant.members] or [workspace.rollouts.get(variant.checkpoint, workspace.first)]
    env = workspace.env(members[0])
    params = None
    steps_used = None  # inner steps actually taken (None for the methods without a model; per member for an ensemble)
    gain = None  # the action gain deployed (None for the methods without a model; per member for an ensemble)
    if variant.method in MODEL_METHODS:
        params = [adapted_params(rollout, variant, demo) for rollout in members]
        steps = [0 if variant.method == "none" else (r.inner_steps if variant.inner_steps is None else variant.inner_steps) for r in members]
        gains = [r.action_gain if variant.action_gain is None else variant.action_gain for r in members]
        steps_used, gain = (steps, gains) if variant.members else (steps[0], gains[0])
    episodes = []
    for trial in range(cfg.trials):
        seed = eval_seed(cfg.seed, plan.index, "trial", trial)
        if params is not None:  # one episode's actor: it may keep the episode's first observation
            act = mean_actor([r.actor(p, variant.action_gain) for r, p in zip(members, params)])
        elif variant.method == "random":
            act = random_actor(np.random.default_rng([seed, 1]))  # a stream of its own, not the env's
        elif variant.method == "expert":
            act = expert_actor(env)
        keep = trial == 0 and plan.index < cfg.videos
        episode = run_episode(env, act, plan.spec, seed, keep_frames=keep)
        record = {"task_index": plan.index, "task_id": envs.TaskSpec.from_dict(plan.spec).task_id(), "trial": trial, "seed": seed,
                  "checkpoint": variant.checkpoint, "members": list(variant.members) or None, "method": variant.label,
                  "base_method": variant.method,
                  "inner_steps": steps_used, "action_gain": gain, "success": episode.success, "steps": episode.steps,
                  "chosen_object": episode.chosen_object, "went_for_target": episode.chosen_object == plan.spec["target"],
                  "first_success_step": episode.first_success_step, "video": demo.video_source,
                  "demo": demo.demo_source if variant.method == "robot_demo" else None, "rollout_video": None, "task": plan.spec}
        if keep:
            record["rollout_video"] = _write_side_by_side(cfg, variant, plan, demo, episode.frames, episode.success)
        episodes.append(record)
        progress()
    return episodes


def _write_side_by_side(cfg: EvalConfig, variant: Variant, plan: TaskPlan, demo: Demonstration, frames: np.ndarray, success: bool) -> str:
    """The video the method adapted on (the robot demo for robot_demo) | the robot acting; path relative to out."""
    watched = demo.demo[0][..., :3] if variant.method == "robot_demo" else demo.video  # RGB, without any depth
    checkpoint = "baseline" if variant.checkpoint == NO_CHECKPOINT else variant.checkpoint
    name = f"{VIDEOS}/task{plan.index:03d}-{checkpoint}-{variant.label.replace('@', '-k')}.mp4"
    path = Path(cfg.out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(path, side_by_side(watched, frames, success), fps=10.0)
    return name


# ----- the job ------------------------------------------------------------------------------------------------
@dataclass
class EvalReport:
    rows: list[Row]
    episodes: list[dict]
    skipped: list[dict]
    markdown: str
    seconds: float
    out: Path

    @property
    def episodes_per_minute(self) -> float:
        return 60 * len(self.episodes) / max(self.seconds, 1e-9)


def run_evaluation(cfg: EvalConfig) -> EvalReport:
    """Evaluate every variant on the same tasks and seeds; write results.json, summary.md, success.png, videos/."""
    check_config(cfg)
    out = Path(cfg.out)
    if (out / RESULTS).exists():
        raise FileExistsError(f"{out / RESULTS} exists: choose a new out folder (results are never overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(cfg)  # in this process too: checks every checkpoint loads before any worker starts
    family = _common_family(workspace)
    for name, members in cfg.ensembles.items():
        require_one_env([workspace.rollouts[m] for m in members], f"ensemble {name!r}")
    plans = plan_tasks(cfg, family)
    start = time.perf_counter()
    episodes, skips = _run(cfg, plans, workspace)
    seconds = time.perf_counter() - start
    workspace.close()
    order = {(v.checkpoint, v.label): i for i, v in enumerate(variants(cfg))}
    episodes.sort(key=lambda e: (e["task_index"], order[(e["checkpoint"], e["method"])], e["trial"]))
    skipped = [asdict(s) for s in sorted(skips, key=lambda s: s.task_index)]
    rows = summarise(episodes, list(order))
    chance = chance_level(family)
    title = f"{family}, {cfg.split} split: {len(plans) - len(skipped)} tasks x {cfg.trials} trials, evaluation seed {cfg.seed}"
    notes = [f"Chance (guessing the target uniformly): {100 * chance:.0f}%. 95% intervals: Wilson score. "
             "'Went for the target': the object the robot went for (nearest the effector at the end; the one moved "
             "farthest in push and pick_place) was the target, success or not; chance is the same figure."]
    notes += [f"Skipped tasks (no successful demonstration): {', '.join(str(s['task_index']) for s in skipped)}."] if skipped else []
    markdown = markdown_table(rows, title, notes)
    (out / SUMMARY).write_text(markdown)
    write_png(out / PLOT, bar_plot(rows, title, chance))
    document = {"config": asdict(cfg), "family": family, "chance": chance, "code_version": code_version(),
                "checkpoints": {n: {"path": p, "step": workspace.rollouts[n].info.step, "git_revision": workspace.rollouts[n].info.git_revision}
                                for n, p in cfg.named_checkpoints().items()},
                "summary": [r.to_dict() for r in rows], "skipped_tasks": skipped, "episodes": episodes}
    _write_json(out / RESULTS, document)
    report = EvalReport(rows, episodes, skipped, markdown, seconds, out)
    log_run(cfg, report, document)
    return report


def _common_family(workspace: Workspace) -> str:
    families = {r.info.env["family"] for r in workspace.rollouts.values()}
    if len(families) != 1:
        raise ValueError(f"all checkpoints of one evaluation must share a task family, got {sorted(families)}")
    return families.pop()


def _write_json(path: Path, document: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=1) + "\n")
    os.replace(tmp, path)


# submit(job, args, then): run job(*args, workspace, progress), here or in a worker, and hand its result to then
Submit = Callable[[Callable[..., Any], tuple, Callable[[Any], None]], None]


def _run(cfg: EvalConfig, plans: list[TaskPlan], workspace: Workspace) -> tuple[list[dict], list[Skipped]]:
    """Every job of the evaluation, in this process or in a pool of workers: the episodes (any order) and the skipped tasks."""
    workers = min(cfg.workers or os.cpu_count() or 1, len(plans) * len(variants(cfg)))
    total = len(plans) * len(variants(cfg)) * cfg.trials
    episodes: list[dict] = []
    skipped: list[Skipped] = []
    with tqdm(total=total, unit="episode", disable=not cfg.progress, file=sys.stderr, smoothing=0.05) as bar:
        if workers == 1:
            torch.set_num_threads(1)  # as in the workers: the same arithmetic whatever the number of workers
            _submit_jobs(cfg, plans, lambda job, args, then: then(job(*args, workspace, bar.update)), episodes, skipped)
        else:
            with SpawnedPool(workers, bar.update, _init_worker, (cfg,)) as pool:
                _submit_jobs(cfg, plans, lambda job, args, then: pool.submit(_in_worker, (job, *args), then), episodes, skipped)
                pool.wait()
    return episodes, skipped


def _submit_jobs(cfg: EvalConfig, plans: list[TaskPlan], submit: Submit, episodes: list[dict], skipped: list[Skipped]) -> None:
    """One job per task makes its demonstration; when it is back, one job per (task, variant) deploys it.

    A deploy job is `trials` episodes (~1.3 CPU s at 2 trials, reach), a tenth of a whole task: a free worker takes
    the next job, so at the end one core waits on the other for at most one short job, where it used to wait for up
    to a whole task. The jobs are near-equal, so their order matters little; in a pool the demonstration jobs,
    queued first, all run first. A demonstration (~0.9 CPU s: the human video and the robot demo) is made once and
    passed along (under 1 MB), not made again in each job. The jobs and their seeds are the same in-process and in
    a pool, so the results do not depend on the number of workers.
    """
    def demonstrated(plan: TaskPlan, demo: Demonstration | Skipped) -> None:
        if isinstance(demo, Skipped):
            skipped.append(demo)
            return
        for variant in variants(cfg):
            submit(deploy_job, (cfg, plan, variant, demo), episodes.extend)

    for plan in plans:
        submit(demonstration_job, (cfg, plan), partial(demonstrated, plan))


_workspace: Optional[Workspace] = None  # per worker process, set by the pool initializer


def _init_worker(cfg: EvalConfig) -> None:
    global _workspace
    torch.set_num_threads(1)  # one process per core: intra-op threads would only compete
    _workspace = Workspace(cfg)


def _in_worker(job: Callable[..., Any], *args: Any) -> Any:
    """`job(*args, workspace, progress)` in a pool worker: its workspace, progress through `demos.pool.report`."""
    return job(*args, _workspace, report)


# ----- tracking -----------------------------------------------------------------------------------------------
def log_run(cfg: EvalConfig, report: EvalReport, document: dict) -> None:
    """Success rates to <out>/metrics.jsonl; with logger=wandb (offline) also the table, the plot and the videos."""
    config = {k: document[k] for k in ("config", "family", "checkpoints", "code_version")}
    logger = RunLogger(report.out, cfg.logger, config, total_steps=0, start_step=0, progress=False)
    try:
        logger.log(0, {f"success/{r.checkpoint}/{r.method}": r.rate for r in report.rows})
        if logger.wandb_run is not None:
            import wandb  # imported only when used: it is slow to import

            columns = ["checkpoint", "method", "successes", "n", "rate", "low", "high"]
            logger.wandb_run.log({
                "summary": wandb.Table(columns=columns, data=[[getattr(r, c) for c in columns] for r in report.rows]),
                "success_plot": wandb.Image(str(report.out / PLOT)),
                **{f"rollouts/{Path(e['rollout_video']).stem}": wandb.Video(str(report.out / e["rollout_video"]), format="mp4")
                   for e in report.episodes if e["rollout_video"]},
            }, step=0)
    finally:
        logger.close()
