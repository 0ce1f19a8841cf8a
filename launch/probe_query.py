"""Diagnostic (not a test): does a checkpoint read from the video which object the task is about, and does its
adapted target query then find that object in the robot's view?

    python -m launch.probe_query --checkpoint checkpoints/reach-linear.pt              # 40 val tasks (~2 minutes)
    python -m launch.probe_query --checkpoint runs/push-ml-daml/checkpoints/last.pt --split test --tasks 56
    python -m launch.probe_query --checkpoint ... --query-scale 3.5    # is the query's direction right, only short?

For checkpoints with a target query that reads the hue (policy.target_query and policy.hue_prediction: DAML or the
black box). The tasks and videos are those of `oneshot-eval split=<split> seed=<seed>` (rendered from the evaluation
seed stream). The policy adapts to each task's video, then:
- **read**: the hue its hue head gives from the adapted query, against the target's; and how often it is nearer the
  target's hue than any other candidate's (chance: 1 / candidates);
- **strength**: the adapted query's norm and the entropy of its softmax over the robot's first frame (uniform:
  log(cells)), which locates nothing;
- **find**: in an expert episode of the task (the evaluation's first trial arrangement), the query's soft-argmax
  point in each robot frame against the target's true x, y on the table. A quadratic map from point to table,
  fit on 4/5 of the tasks and tested on the rest (5 folds), gives an RMSE that, beside the positions' spread, says
  how precisely the query locates the target (a query that finds nothing leaves the spread); the same on the
  episodes' first frames alone (the arm far from the target) and over their last quarters (the arm at it) says
  whether the arm's approach throws the point off. A policy trained with a target-position head
  (policy.target_position) also gets that head's own RMSE, with no map fit.
- **where**: the share of the query's softmax (first robot frame) within 6 px of the target's centre, and of the other
  objects' (projected through the robot camera), and the cell where it peaks most often, with its share of tasks: a
  query held by one fixed cell (an image border, say) locates nothing whatever the video.
- **place** (a policy with a place query, policy.place_query: pick_place's box): the share of the adapted place
  query's softmax (first robot frame) within 6 px of the target container's centre, and of the other containers'.
``--query-scale`` multiplies the adapted query before use: a query that points the right way but is too short to
peak locates the target once lengthened; one that points elsewhere does not.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch.func import functional_call

import envs
from envs.core import ROBOT_CAMERA
from envs.scene import container_name
from demos.reader import target_hue
from imitation.evaluate import EvalConfig, TaskPlan, demonstrate, eval_seed, plan_tasks
from imitation.layers import spatial_soft_argmax
from imitation.policy import PolicyOutput, quadratic
from imitation.rollout import Rollout, policy_image


def hue_degrees(cos_sin: np.ndarray) -> float:
    return float(np.degrees(np.arctan2(cos_sin[1], cos_sin[0])))


def angle_between(a: float, b: float) -> float:
    """Absolute difference of two angles in degrees, in [0, 180]."""
    return abs((a - b + 180.0) % 360.0 - 180.0)


def policy_output(rollout: Rollout, params: dict, obs: dict) -> PolicyOutput:
    image = torch.from_numpy(policy_image(obs, rollout.info.model.policy.query_depth))[None]
    state = torch.from_numpy(np.asarray(obs["state"], dtype=np.float32))[None]
    with torch.no_grad():
        return functional_call(rollout.model, params, (image, state))


def query_point(output: PolicyOutput) -> np.ndarray:
    """The query's soft-argmax point in [-1, 1]^2 (as the policy computes it) for one robot observation."""
    return spatial_soft_argmax(output.query_logits[:, None], torch.ones(()))[0].numpy()


def quadratic_features(points: np.ndarray) -> np.ndarray:
    """A constant and the policy's quadratic features of (N, 2) points: a map linear in these fits the perspective."""
    return np.concatenate([np.ones((len(points), 1)), quadratic(torch.from_numpy(points)).numpy()], axis=1)


def probe_task(rollout: Rollout, env: gym.Env, cfg: EvalConfig, plan: TaskPlan, hue_head: bool, query_scale: float) -> dict:
    """One task's read, strength and (point, true target x, y) pairs over an expert episode."""
    video = demonstrate(cfg, plan, env).video
    params = dict(rollout.adapt(video))
    params["target_query"] = query_scale * params["target_query"]
    spec = envs.TaskSpec.from_dict(plan.spec)
    obs, _ = env.reset(seed=eval_seed(cfg.seed, plan.index, "trial", 0), options={"task": spec})
    output = policy_output(rollout, params, obs)
    softmax = map_softmax(output.query_logits)
    view, size = env.unwrapped.privileged_view(), obs["image"].shape[0]
    objects = [view.object_position(i) for i in range(len(spec.objects))]
    result = {**softmax_places(softmax, objects, spec.target, size),
              "norm": float(params["target_query"].norm()),
              "entropy": float(-(softmax * np.log(np.clip(softmax, 1e-12, None))).sum()),
              "grid": tuple(output.query_logits.shape[-2:]), "points": [], "targets": [], "located": []}
    if output.place_logits is not None:
        containers = [view.world.position(container_name(i)) for i in range(len(spec.containers))]
        places = softmax_places(map_softmax(output.place_logits), containers, spec.target_container, size)
        result["place_mass"], result["place_other_mass"] = places["target_mass"], places["other_mass"]
    if hue_head:
        hue = hue_degrees(output.target_hue[0].numpy())
        errors = [angle_between(hue, hue_degrees(target_hue({**plan.spec, "target": i}).numpy()))
                  for i in range(len(plan.spec["objects"]))]
        result["hue_error"] = errors[spec.target]
        result["read_right"] = errors[spec.target] < min(e for i, e in enumerate(errors) if i != spec.target)
    while True:
        result["points"].append(query_point(output))
        result["targets"].append(env.unwrapped.privileged_view().target_position[:2].copy())
        if output.target_position is not None:
            result["located"].append(output.target_position[0, :2].numpy())
        obs, _, terminated, truncated, _ = env.step(env.unwrapped.expert_action())
        if terminated or truncated:
            return result
        output = policy_output(rollout, params, obs)


def map_softmax(logits: torch.Tensor) -> np.ndarray:
    """A query's (1, h, w) scores over one robot frame -> its softmax over the (h, w) cells."""
    return torch.softmax(logits.flatten(), dim=0).numpy().reshape(logits.shape[-2:])


NEAR_PIXELS = 6.0  # "near" a thing: the cell's centre within this many pixels of the thing's projected centre


def softmax_places(softmax: np.ndarray, positions: list[np.ndarray], chosen: int, image_size: int) -> dict:
    """The softmax's mass near the chosen one of some things (world ``positions``) and near the others, and the
    (row, column) of its peak cell."""
    rows, columns = softmax.shape
    centres = np.stack(np.meshgrid((np.arange(columns) + 0.5) * image_size / columns,
                                   (np.arange(rows) + 0.5) * image_size / rows), axis=-1)

    def near(position: np.ndarray) -> np.ndarray:
        pixel = ROBOT_CAMERA.project(position, image_size, image_size)
        return np.linalg.norm(centres - pixel, axis=-1) < NEAR_PIXELS

    target = near(positions[chosen])
    others = np.any([near(p) for i, p in enumerate(positions) if i != chosen], axis=0) & ~target
    peak = np.unravel_index(int(softmax.argmax()), softmax.shape)
    return {"target_mass": float(softmax[target].sum()), "other_mass": float(softmax[others].sum()),
            "peak": (int(peak[0]), int(peak[1]))}


class Localisation(NamedTuple):
    """How precisely a quadratic map from the query point gives the target's x, y (metres), on held-out tasks."""

    rmse: np.ndarray  # over every frame
    spread: np.ndarray  # the std of the target's x, y: what a point that locates nothing would leave
    first_frame: np.ndarray  # RMSE on each episode's first frame (the arm far away)
    last_quarter: np.ndarray  # RMSE over each episode's last quarter of frames (the arm at the target)


def localisation(results: list[dict], folds: int = 5) -> Localisation:
    """Each fold of tasks predicted by a quadratic map fit on the other folds (so every task is held out once)."""
    fold_of = np.arange(len(results)) % folds
    errors, targets = [], []  # per task: (frames, 2)
    for fold in range(folds):
        fit = [r for r, f in zip(results, fold_of) if f != fold]
        weights = np.linalg.lstsq(quadratic_features(np.concatenate([r["points"] for r in fit])),
                                  np.concatenate([r["targets"] for r in fit]), rcond=None)[0]
        for r in (r for r, f in zip(results, fold_of) if f == fold):
            errors.append(quadratic_features(np.asarray(r["points"])) @ weights - np.asarray(r["targets"]))
            targets.append(np.asarray(r["targets"]))

    def rmse(errs: list[np.ndarray]) -> np.ndarray:
        return np.sqrt((np.concatenate(errs) ** 2).mean(0))

    return Localisation(rmse(errors), np.concatenate(targets).std(0), rmse([e[:1] for e in errors]),
                        rmse([e[-max(1, len(e) // 4):] for e in errors]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint with a target query (file, or run folder)")
    parser.add_argument("--split", default="val", choices=["val", "test", "test_ood"], help="object identities (default val)")
    parser.add_argument("--tasks", type=int, default=40, help="evaluation tasks to probe (default 40, at least 10)")
    parser.add_argument("--seed", type=int, default=0, help="evaluation seed stream, as oneshot-eval's seed (default 0)")
    parser.add_argument("--query-scale", type=float, default=1.0, help="multiply the adapted query by this (default 1)")
    args = parser.parse_args(argv)
    if args.tasks < 10:
        parser.error("--tasks must be at least 10: five folds of them fit and test the map from query point to table")
    if args.query_scale <= 0:
        parser.error(f"--query-scale must be > 0, got {args.query_scale}")
    return args


@dataclass
class QuerySummary:
    tasks: int
    read_right: int | None  # tasks whose hue read is nearer the target's than any other candidate's (None: no hue head)
    median_hue_error: float | None  # degrees
    query_norm: float
    entropy: float  # nats, of the query's softmax over the first robot frame
    uniform_entropy: float  # log(cells)
    rmse: np.ndarray  # metres, the target's x, y from the query point (held out)
    spread: np.ndarray  # metres, the std of the target's x, y
    rmse_first_frame: np.ndarray  # metres, as rmse on the episodes' first frames only
    rmse_last_quarter: np.ndarray  # metres, as rmse over the episodes' last quarter of frames (the arm at the target)
    head_rmse: np.ndarray | None  # metres, the target's x, y from the policy's own position head (None: no head)
    target_mass: float  # mean share of the first frame's softmax near the target
    other_mass: float  # ... and near the other objects
    common_peak: tuple[int, int]  # the (row, column) cell where the softmax peaks in the most tasks
    common_peak_share: float  # the share of tasks that peak there
    cells: tuple[int, int]  # the feature map's rows and columns
    place_mass: float | None = None  # mean share of the place query's softmax near the target container (None: none)
    place_other_mass: float | None = None  # ... and near the other containers


def probe(checkpoint: str, split: str = "val", tasks: int = 40, seed: int = 0, query_scale: float = 1.0) -> QuerySummary:
    rollout = Rollout.from_checkpoint(checkpoint)
    policy = rollout.info.model.policy
    if not policy.target_query:
        raise ValueError(f"{checkpoint}: the policy has no target query (policy.target_query=false): nothing to probe")
    cfg = EvalConfig(split=split, num_tasks=tasks, seed=seed, methods=["daml"], out="-")
    env = rollout.make_env(split)
    results = [probe_task(rollout, env, cfg, plan, policy.hue_prediction, query_scale)
               for plan in plan_tasks(cfg, rollout.info.env["family"])]
    env.close()
    found = localisation(results)
    peaks = [r["peak"] for r in results]
    peak = max(set(peaks), key=peaks.count)
    head_rmse = None
    if policy.target_position:
        misses = np.concatenate([np.subtract(r["located"], r["targets"]) for r in results])
        head_rmse = np.sqrt((misses ** 2).mean(0))
    return QuerySummary(
        tasks=len(results),
        read_right=sum(r["read_right"] for r in results) if policy.hue_prediction else None,
        median_hue_error=float(np.median([r["hue_error"] for r in results])) if policy.hue_prediction else None,
        query_norm=float(np.mean([r["norm"] for r in results])), entropy=float(np.mean([r["entropy"] for r in results])),
        uniform_entropy=float(np.log(np.prod(results[0]["grid"]))), rmse=found.rmse, spread=found.spread,
        rmse_first_frame=found.first_frame, rmse_last_quarter=found.last_quarter, head_rmse=head_rmse,
        target_mass=float(np.mean([r["target_mass"] for r in results])),
        other_mass=float(np.mean([r["other_mass"] for r in results])), common_peak=peak,
        common_peak_share=peaks.count(peak) / len(peaks), cells=results[0]["grid"],
        place_mass=float(np.mean([r["place_mass"] for r in results])) if policy.place_query else None,
        place_other_mass=float(np.mean([r["place_other_mass"] for r in results])) if policy.place_query else None)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        summary = probe(args.checkpoint, args.split, args.tasks, args.seed, args.query_scale)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"probe_query: {e}") from e
    scaled = f", adapted query x {args.query_scale:g}" if args.query_scale != 1.0 else ""
    print(f"{args.checkpoint}: {args.split} split, {summary.tasks} tasks (evaluation seed {args.seed}){scaled}")
    if summary.read_right is not None:
        print(f"read:     the hue read is nearer the target's than any other candidate's in {summary.read_right}/"
              f"{summary.tasks} tasks; median hue error {summary.median_hue_error:.0f} degrees")
    print(f"strength: adapted query norm {summary.query_norm:.2f}; softmax entropy over the first robot frame "
          f"{summary.entropy:.2f} nats (uniform: {summary.uniform_entropy:.2f})")
    print(f"find:     the query point locates the target's x, y to an RMSE of {summary.rmse[0] * 100:.1f}, "
          f"{summary.rmse[1] * 100:.1f} cm (the positions' spread: {summary.spread[0] * 100:.1f}, "
          f"{summary.spread[1] * 100:.1f} cm); on the first frame {summary.rmse_first_frame[0] * 100:.1f}, "
          f"{summary.rmse_first_frame[1] * 100:.1f} cm, over the last quarter of the episode "
          f"{summary.rmse_last_quarter[0] * 100:.1f}, {summary.rmse_last_quarter[1] * 100:.1f} cm")
    print(f"where:    {summary.target_mass:.0%} of the first frame's softmax lies within {NEAR_PIXELS:g} px of the target, "
          f"{summary.other_mass:.0%} near the other objects; it peaks at cell {summary.common_peak} of "
          f"{summary.cells[0]}x{summary.cells[1]} in {summary.common_peak_share:.0%} of the tasks")
    if summary.place_mass is not None:
        print(f"place:    {summary.place_mass:.0%} of the place query's first-frame softmax lies within {NEAR_PIXELS:g} px "
              f"of the target container, {summary.place_other_mass:.0%} near the other containers")
    if summary.head_rmse is not None:
        print(f"head:     the policy's target-position head misses the target's x, y by an RMSE of "
              f"{summary.head_rmse[0] * 100:.1f}, {summary.head_rmse[1] * 100:.1f} cm")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
