"""Push: push the target object onto the goal region; a distractor object stands on the table too."""

from __future__ import annotations

import numpy as np

from envs.bullet import World
from envs.scene import GOAL_RADIUS, Arrangement, object_name, sample_positions
from envs.task_spec import TaskSpec
from envs.tasks.base import EpisodeView, TaskFamily, Waypoint, jitter, moved_object, ramp

INSIDE_STEPS = 10
PUSH_HEIGHT = 0.02
PUSH_SPEED = 0.015  # metres per step while in contact
LANE_HALF_WIDTH = 0.03  # metres off the push line within which the effector pushes
SETTLED_WITHIN = 0.01  # metres from the goal's centre within which the expert holds still


def unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


class Push(TaskFamily):
    name = "push"
    max_steps = 60
    success_rule = f"target's centre within {GOAL_RADIUS} m (x and y) of the goal's centre for at least {INSIDE_STEPS} steps"
    chosen_object = staticmethod(moved_object)

    def arrange(self, rng: np.random.Generator, task: TaskSpec) -> Arrangement:
        # Every object, not only the target, must be a valid push, so the arrangement does not depend on the target:
        # otherwise the scene alone would tell it (the only object at a push's distance from the goal).
        for _ in range(1000):  # about 60% of draws are accepted
            *objects, goal = sample_positions(rng, len(task.objects) + 1, min_gap=0.12, margin=0.03)
            if all(_valid_push(objects, i, goal) for i in range(len(objects))):
                return Arrangement(objects=objects, goal=goal)
        raise RuntimeError("could not arrange a push task")  # pragma: no cover

    def achieved(self, world: World, task: TaskSpec, arrangement: Arrangement, effector: np.ndarray, holding: int | None) -> bool:
        p = world.position(object_name(task.target))
        return bool(np.all(np.abs(p[:2] - arrangement.goal) <= GOAL_RADIUS))

    def success(self, history: list[bool]) -> bool:
        return sum(history) >= INSIDE_STEPS

    def expert_waypoint(self, view: EpisodeView) -> Waypoint:
        """A memoryless expert: the waypoint is a continuous function of the effector, object and goal positions.

        A phase machine with resets (an earlier version) made the action depend on a hidden phase and jump at
        thresholds, which a policy that sees only images and proprioception cannot clone. Here soft weights replace
        the phases: `in_lane` (the effector is in the strip behind the object, on its push line) lowers the
        effector; `pushing` (in the lane and low) moves it from the point behind the object to pushing it;
        `settled` (the object on the goal's centre) holds it still.
        """
        obj, goal = view.target_position[:2], view.arrangement.goal
        to_goal = goal - obj
        distance = max(float(np.linalg.norm(to_goal)), 1e-9)
        u = to_goal / distance
        offset = view.ee[:2] - obj
        along = float(np.dot(offset, u))  # < 0: the effector is behind the object
        lateral = abs(float(u[0] * offset[1] - u[1] * offset[0]))
        in_lane = ramp(LANE_HALF_WIDTH - lateral, 0.01) * ramp(-along, 0.01) * ramp(along + 0.1, 0.01)
        pushing = in_lane * ramp(PUSH_HEIGHT + 0.03 - view.ee[2], 0.02)
        behind = obj - 0.06 * u
        remaining = to_goal * min(1.0, PUSH_SPEED / distance)  # slow pushes do not overshoot
        on_line = obj + along * u  # the effector's projection on the push line: pushing keeps it on the line
        xy = (1.0 - pushing) * behind + pushing * (on_line + remaining)
        # low and off the lane: lift before moving across, so the effector does not sweep objects aside
        may_cross = max(pushing, ramp(view.ee[2] - PUSH_HEIGHT - 0.03, 0.03))
        xy = view.ee[:2] + may_cross * (xy - view.ee[:2])
        z = PUSH_HEIGHT + 0.08 * (1.0 - in_lane)
        # near the goal's centre the push direction turns with every millimetre: hold still there instead of
        # circling the object for a new push (and knocking it off the goal)
        settled = 1.0 - ramp(distance - SETTLED_WITHIN, 0.02)
        waypoint = np.array([*xy, z])
        return Waypoint(waypoint + settled * (view.ee - waypoint), grip=True)

    def human_plan(self, rng: np.random.Generator, world: World, task: TaskSpec, arrangement: Arrangement) -> list[Waypoint]:
        obj = world.position(object_name(task.target))
        u = np.array([*unit(arrangement.goal - obj[:2]), 0.0])
        start = np.array([*obj[:2], 0.016]) - 0.075 * u
        end = np.array([*arrangement.goal, 0.016]) - 0.04 * u
        return [
            Waypoint(start + [0, 0, 0.08] + jitter(rng, 0.015), grip=False, frames=int(rng.integers(9, 14))),
            Waypoint(start, grip=False, frames=int(rng.integers(4, 7))),
            Waypoint(end, grip=False, frames=int(rng.integers(14, 20))),
            Waypoint(end + [0, 0, 0.1] - 0.03 * u, grip=False, frames=int(rng.integers(6, 10))),
        ]


def _valid_push(objects: list[np.ndarray], index: int, goal: np.ndarray) -> bool:
    """Object `index` is 12-25 cm from the goal and its push path does not run through another object."""
    start = objects[index]
    others = [o for i, o in enumerate(objects) if i != index]
    return 0.12 <= float(np.linalg.norm(goal - start)) <= 0.25 and all(_clear_of_path(o, start, goal) for o in others)


def _clear_of_path(point: np.ndarray, start: np.ndarray, end: np.ndarray, clearance: float = 0.1) -> bool:
    """The point is farther than `clearance` from the segment start-end (extended behind the start)."""
    d = end - start
    t = np.clip(np.dot(point - start, d) / np.dot(d, d), -0.6, 1.0)
    return float(np.linalg.norm(point - (start + t * d))) > clearance
