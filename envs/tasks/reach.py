"""Reach: touch the target object among two distractors."""

from __future__ import annotations

import numpy as np

from envs.bullet import World
from envs.scene import Arrangement, object_name, sample_positions
from envs.task_spec import TaskSpec
from envs.tasks.base import EpisodeView, TaskFamily, Waypoint, count_trailing, jitter, reached

TOUCH_DISTANCE = 0.05
HOLD_STEPS = 5


class Reach(TaskFamily):
    name = "reach"
    max_steps = 40
    success_rule = f"effector within {TOUCH_DISTANCE} m of the target's centre for the last {HOLD_STEPS} steps"

    def arrange(self, rng: np.random.Generator, task: TaskSpec) -> Arrangement:
        return Arrangement(objects=sample_positions(rng, len(task.objects), min_gap=0.13, margin=0.02))

    def achieved(self, world: World, task: TaskSpec, arrangement: Arrangement, effector: np.ndarray, holding: int | None) -> bool:
        return bool(np.linalg.norm(effector - world.position(object_name(task.target))) <= TOUCH_DISTANCE)

    def success(self, history: list[bool]) -> bool:
        return count_trailing(history) >= HOLD_STEPS

    def expert_waypoint(self, view: EpisodeView) -> Waypoint:
        target = view.target_position
        above, touch = target + [0, 0, 0.09], target + [0, 0, 0.03]
        if self.phase == 0:
            self._advance_when(reached(view.ee[:2], above[:2], 0.02))
        return Waypoint(above if self.phase == 0 else touch, grip=True)

    def human_plan(self, rng: np.random.Generator, world: World, task: TaskSpec, arrangement: Arrangement) -> list[Waypoint]:
        target = world.position(object_name(task.target))
        hover = target + [0, 0, 0.10] + jitter(rng, 0.02)
        touch = target + [0, 0, 0.02]
        return [
            Waypoint(hover, grip=False, frames=int(rng.integers(10, 16))),
            Waypoint(touch, grip=False, frames=int(rng.integers(5, 9))),
            Waypoint(touch, grip=False, frames=int(rng.integers(6, 10))),
        ]
