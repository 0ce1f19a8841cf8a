"""Diagnostic (not a test): where does a pick_place policy fail, stage by stage?

    python -m launch.probe_grasp --checkpoint runs/pp2-s4/checkpoints/last.pt      # 30 val tasks (~1 minute)
    python -m launch.probe_grasp --method expert --tasks 10                        # the scripted expert, for reference

The tasks, videos and arrangements are those of `oneshot-eval split=<split> seed=<seed>` (its first trial). The
policy adapts to each task's video (`--method daml`; `expert` and `random` need no checkpoint) and acts; the probe
follows each episode through the stages of the task and counts the episodes that reached each one:

- over it:     the effector within 2 cm (x, y) of the target object, at any height
- down at it:  ... and lower than 3 cm above the target's centre
- closed there: a close command given there
- grasped it:  the grasp assist holds the target (`grasped another` counts the distractor instead)
- lifted it:   held, with its centre above 8 cm
- over its box: held over the target container's footprint
- success:     the task's own rule at the last step

and, separately, the episodes whose first close command came away from the target (in the air, or elsewhere): a
policy that closes before it gets there carries nothing; and those that held the target over another container
(a carry that went to a wrong box: the video says which box too).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

import envs
from envs.scene import container_name, over_footprint
from imitation.evaluate import EvalConfig, TaskPlan, TaskSkipped, demonstrate, eval_seed, plan_tasks
from imitation.rollout import Actor, Rollout, expert_actor, random_actor

STAGES = ("over it", "down at it", "closed there", "grasped it", "lifted it", "over its box", "success")
NEAR_XY = 0.02  # metres (x, y) from the target's centre: "over it"
LOW_ABOVE = 0.03  # metres above the target's centre: "down at it"
LIFTED_ABOVE = 0.08  # metres: a held target whose centre is higher than this has been lifted
METHODS = ("daml", "expert", "random")


@dataclass
class Trace:
    """What one episode reached."""

    reached: set[str] = field(default_factory=set)
    grasped_other: bool = False
    closed_away: bool = False  # its first close command came away from the target
    other_box: bool = False  # it held the target over another container's footprint
    first_close: np.ndarray | None = None  # effector minus target centre (x, y, z, metres) at the first close; None: none


def trace_episode(env: gym.Env, act: Actor, spec: envs.TaskSpec, seed: int) -> Trace:
    obs, _ = env.reset(seed=seed, options={"task": spec})
    unwrapped, trace, closed_before = env.unwrapped, Trace(), False
    box = unwrapped.world.position(container_name(spec.target_container))
    other_boxes = [unwrapped.world.position(container_name(i))
                   for i in range(len(spec.containers)) if i != spec.target_container]
    done, info = False, {}
    while not done:
        action = np.clip(np.asarray(act(obs), dtype=np.float32), -1.0, 1.0)
        view = unwrapped.privileged_view()
        near = np.linalg.norm(view.ee[:2] - view.target_position[:2]) < NEAR_XY
        down = near and view.ee[2] < view.target_position[2] + LOW_ABOVE
        closing = bool(action[3] <= 0.0)
        trace.reached |= {name for name, hit in (("over it", near), ("down at it", down),
                                                 ("closed there", down and closing)) if hit}
        if closing and not closed_before:
            trace.closed_away, closed_before = not down, True
            trace.first_close = view.ee - view.target_position
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        held = unwrapped.holding
        trace.grasped_other |= held is not None and held != spec.target
        if held == spec.target:
            target = unwrapped.privileged_view().target_position
            trace.reached |= {"grasped it"} | ({"lifted it"} if target[2] > LIFTED_ABOVE else set()) | (
                {"over its box"} if over_footprint(target, box) else set())
            trace.other_box |= any(over_footprint(target, other) for other in other_boxes)
    if info.get("is_success"):
        trace.reached.add("success")
    return trace


@dataclass
class GraspSummary:
    episodes: int
    reached: dict[str, int]  # stage -> episodes that reached it (STAGES order)
    grasped_other: int
    closed_away: int
    other_box: int
    skipped: int  # tasks without a successful human video (skipped, as oneshot-eval does)
    # the first closes' offsets (effector minus target, metres), of the episodes that succeeded and of those that failed
    close_offsets: dict[str, np.ndarray] = field(default_factory=dict)  # "success" | "failure" -> (episodes, 3)


def probe(checkpoint: str | None, method: str = "daml", split: str = "val", tasks: int = 30,
          seed: int = 0) -> GraspSummary:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    if method == "daml" and checkpoint is None:
        raise ValueError("--method daml adapts a policy: give --checkpoint")
    rollout = Rollout.from_checkpoint(checkpoint) if method == "daml" else None
    if rollout is not None and rollout.info.env["family"] != "pick_place":
        raise ValueError(f"{checkpoint} was trained on {rollout.info.env['family']}, not pick_place")
    env = rollout.make_env(split) if rollout is not None else envs.make("pick_place", split=split)
    cfg = EvalConfig(split=split, num_tasks=tasks, seed=seed, methods=["daml"], out="-")
    traces, skipped = [], 0
    for plan in plan_tasks(cfg, "pick_place"):
        try:
            act = actor(method, rollout, env, cfg, plan)
        except TaskSkipped:  # no successful human video: oneshot-eval skips the task too
            skipped += 1
            continue
        spec = envs.TaskSpec.from_dict(plan.spec)
        traces.append(trace_episode(env, act, spec, eval_seed(seed, plan.index, "trial", 0)))
    env.close()
    offsets = {outcome: np.array([t.first_close for t in traces if t.first_close is not None
                                  and ("success" in t.reached) == (outcome == "success")]).reshape(-1, 3)
               for outcome in ("success", "failure")}
    return GraspSummary(len(traces), {stage: sum(stage in t.reached for t in traces) for stage in STAGES},
                        sum(t.grasped_other for t in traces), sum(t.closed_away for t in traces),
                        sum(t.other_box for t in traces), skipped, offsets)


def actor(method: str, rollout: Rollout | None, env: gym.Env, cfg: EvalConfig, plan: TaskPlan) -> Actor:
    if method == "expert":
        return expert_actor(env)
    if method == "random":
        return random_actor(np.random.default_rng(eval_seed(cfg.seed, plan.index, "trial", 0)))
    return rollout.actor(rollout.adapt(demonstrate(cfg, plan, env).video))


def format_cm(metres: np.ndarray) -> str:
    return ", ".join(f"{v * 100:+.1f}" for v in metres)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a pick_place checkpoint (file, or run folder); needed for --method daml")
    parser.add_argument("--method", default="daml", choices=METHODS, help="who acts (default daml: the adapted policy)")
    parser.add_argument("--split", default="val", choices=["val", "test", "test_ood"],
                        help="object identities (default val)")
    parser.add_argument("--tasks", type=int, default=30, help="evaluation tasks, one episode each (default 30)")
    parser.add_argument("--seed", type=int, default=0,
                        help="evaluation seed stream, as oneshot-eval's seed (default 0)")
    args = parser.parse_args(argv)
    if args.tasks < 1:
        parser.error(f"--tasks must be at least 1, got {args.tasks}")
    if args.method == "daml" and args.checkpoint is None:
        parser.error("--method daml adapts a policy: give --checkpoint")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        summary = probe(args.checkpoint, args.method, args.split, args.tasks, args.seed)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"probe_grasp: {e}") from e
    who = args.checkpoint if args.method == "daml" else args.method
    skipped = f"; {summary.skipped} tasks skipped (no successful human video)" if summary.skipped else ""
    print(f"{who}: pick_place, {args.split} split, {summary.episodes} episodes (evaluation seed {args.seed}){skipped}")
    print("  ".join(f"{stage} {count}" for stage, count in summary.reached.items()))
    print(f"grasped another {summary.grasped_other}; first close away from the target {summary.closed_away}; "
          f"held it over another box {summary.other_box}")
    for outcome, offsets in summary.close_offsets.items():
        if len(offsets):
            print(f"first close, effector minus target (x, y, z), {outcome} ({len(offsets)} episodes): mean "
                  f"{format_cm(offsets.mean(0))} cm, sd {format_cm(offsets.std(0))} cm")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
