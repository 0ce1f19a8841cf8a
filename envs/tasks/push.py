"""Push: push the target object onto the goal region; a distractor object stands on the table too."""

from __future__ import annotations

import numpy as np

from envs.bullet import World
from envs.scene import GOAL_RADIUS, Arrangement, object_name, sample_positions
from envs.task_spec import TaskSpec
from envs.tasks.base import EpisodeView, TaskFamily, Waypoint, jitter, moved_object, reached

INSIDE_STEPS = 10
PUSH_HEIGHT = 0.02
PUSH_SPEED = 0.015  # metres per step while in contact


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
        obj = view.target_position
        goal = view.arrangement.goal
        u = np.array([*unit(goal - obj[:2]), 0.0])
        behind = np.array([*obj[:2], PUSH_HEIGHT]) - 0.06 * u
        offset = view.ee[:2] - obj[:2]
        lateral = abs(float(u[0] * offset[1] - u[1] * offset[0]))
        ahead = float(np.dot(obj[:2] - view.ee[:2], u[:2]))  # > 0: the effector is behind the object
        if self.phase == 2 and (lateral > 0.035 or ahead < 0.0):
            self.phase = 0  # the object slid sideways or past the effector: lift and approach again
        if self.phase == 0 and view.ee[2] < PUSH_HEIGHT + 0.04 and np.linalg.norm(view.ee[:2] - behind[:2]) > 0.02:
            return Waypoint(np.array([*view.ee[:2], PUSH_HEIGHT + 0.08]), grip=True)  # lift before moving across
        if self.phase == 0:
            self._advance_when(reached(view.ee[:2], behind[:2], 0.015))
            return Waypoint(behind + [0, 0, 0.08], grip=True)
        if self.phase == 1:
            self._advance_when(view.ee[2] < PUSH_HEIGHT + 0.015)
            return Waypoint(behind, grip=True)
        # move the effector by the object's remaining error, aimed through the object's centre
        remaining = goal - obj[:2]
        remaining *= min(1.0, PUSH_SPEED / max(float(np.linalg.norm(remaining)), 1e-9))  # slow pushes do not overshoot
        aim = np.array([*(obj[:2] - ahead * u[:2] + remaining), PUSH_HEIGHT])
        return Waypoint(aim, grip=True)

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
