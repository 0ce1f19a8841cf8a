"""Pick and place: pick the target object and put it into the target container, among two containers."""

from __future__ import annotations

import numpy as np

from envs.bullet import World
from envs.scene import Arrangement, container_name, inside_container, object_name, sample_positions
from envs.task_spec import TaskSpec
from envs.tasks.base import EpisodeView, TaskFamily, Waypoint, jitter, moved_object, reached

CARRY_HEIGHT = 0.16
GRASP_FRAMES = 3


class PickPlace(TaskFamily):
    name = "pick_place"
    max_steps = 70
    success_rule = "target's centre inside the target container's footprint, below its rim, and released"
    chosen_object = staticmethod(moved_object)

    def __init__(self) -> None:
        super().__init__()
        self.wait = 0

    def reset_expert(self) -> None:
        super().reset_expert()
        self.wait = 0

    def arrange(self, rng: np.random.Generator, task: TaskSpec) -> Arrangement:
        # containers well apart from the objects and from each other, so the carry path is clear
        for _ in range(1000):
            spots = sample_positions(rng, len(task.objects) + len(task.containers), min_gap=0.11, margin=0.02)
            containers, objects = spots[len(task.objects):], spots[: len(task.objects)]
            if all(np.linalg.norm(c - o) > 0.16 for c in containers for o in objects) and np.linalg.norm(containers[0] - containers[1]) > 0.17:
                return Arrangement(objects=objects, containers=containers)
        raise RuntimeError("could not arrange a pick-and-place task")  # pragma: no cover

    def achieved(self, world: World, task: TaskSpec, arrangement: Arrangement, effector: np.ndarray, holding: int | None) -> bool:
        released = holding != task.target
        return released and inside_container(world, object_name(task.target), container_name(task.target_container))

    def success(self, history: list[bool]) -> bool:
        return bool(history) and history[-1]

    def expert_waypoint(self, view: EpisodeView) -> Waypoint:
        obj = view.target_position
        box = view.world.position(container_name(view.task.target_container))
        plan = [
            (np.array([*obj[:2], CARRY_HEIGHT]), False),
            (obj + [0, 0, 0.005], False),
            (obj + [0, 0, 0.005], True),  # close: wait below
            (np.array([*view.ee[:2], CARRY_HEIGHT]), True),  # lift straight up (the held object moves with the hand)
            (np.array([*box[:2], CARRY_HEIGHT]), True),
            (np.array([*box[:2], 0.09]), True),
            (np.array([*box[:2], 0.09]), False),  # open: wait below
            (np.array([*box[:2], CARRY_HEIGHT]), False),
        ]
        if self.phase >= len(plan):
            return Waypoint(plan[-1][0], grip=False)
        position, grip = plan[self.phase]
        if self.phase in (2, 6):
            self.wait += 1
            self._advance_when(self.wait > GRASP_FRAMES)
        else:
            self.wait = 0
            self._advance_when(reached(view.ee, position, 0.015 if self.phase != 1 else 0.01))
        return Waypoint(position, grip=grip)

    def human_plan(self, rng: np.random.Generator, world: World, task: TaskSpec, arrangement: Arrangement) -> list[Waypoint]:
        obj = world.position(object_name(task.target))
        box = world.position(container_name(task.target_container))
        lift = np.array([*obj[:2], CARRY_HEIGHT]) + jitter(rng, 0.02)
        above_box = np.array([*box[:2], CARRY_HEIGHT]) + jitter(rng, 0.015)
        drop = np.array([*box[:2], 0.08])
        return [
            Waypoint(lift + [0, 0, 0.02], grip=False, frames=int(rng.integers(9, 14))),
            Waypoint(obj + [0, 0, 0.01], grip=False, frames=int(rng.integers(5, 8))),
            Waypoint(obj + [0, 0, 0.01], grip=True, frames=int(rng.integers(2, 4))),
            Waypoint(lift, grip=True, frames=int(rng.integers(5, 8))),
            Waypoint(above_box, grip=True, frames=int(rng.integers(8, 13))),
            Waypoint(drop, grip=True, frames=int(rng.integers(4, 7))),
            Waypoint(drop, grip=False, frames=int(rng.integers(2, 4))),
            Waypoint(drop + [0, 0, 0.1], grip=False, frames=int(rng.integers(4, 7))),
        ]
