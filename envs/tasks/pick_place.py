"""Pick and place: pick the target object and put it into the target container, among two containers."""

from __future__ import annotations

import numpy as np

from envs.bullet import World
from envs.scene import (INSIDE_BELOW, Arrangement, container_name, inside_container, object_name, over_footprint,
                         sample_positions)
from envs.task_spec import TaskSpec
from envs.tasks.base import EpisodeView, TaskFamily, Waypoint, jitter, moved_object, ramp, reached

CARRY_HEIGHT = 0.16  # the effector carries (and approaches) at this height, clear of the boxes' walls
DROP_HEIGHT = 0.09  # the effector lets go of the object at this height over the box
GRASP_ABOVE = 0.005  # the grasp point: this far above the object's centre
CLOSE_WITHIN = 0.01  # the gripper closes within this distance of the grasp point
RELEASE_WITHIN = 0.015  # ... and opens within this distance of the drop point
EMPTY_FINGERS = 0.01  # fingers closer than this (metres between them) hold nothing: open them and try again


class PickPlace(TaskFamily):
    name = "pick_place"
    max_steps = 70
    success_rule = "target's centre inside the target container's footprint, below its rim, and released"
    chosen_object = staticmethod(moved_object)

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
        """A memoryless expert (as push's): the waypoint and the gripper follow from what the policy can also know,
        the effector, the fingers, whether something is held, and where the object and the box are.

        An earlier phase machine closed after waiting a fixed number of frames and then carried on whether or not it
        held anything, so a policy that closed too early (it did, in the air) met states the demos never explain.
        Here a gripper closed on nothing opens again, and a held object is carried whatever happened before.
        """
        box = view.world.position(container_name(view.task.target_container))
        if view.holding == view.task.target:
            return carry(view.ee, box)
        if view.holding is not None:  # the wrong object: let it go
            return Waypoint(view.ee.copy(), grip=False)
        if over_footprint(view.target_position, box):  # let go over the box: once it has dropped in, rise clear
            dropped = view.target_position[2] < INSIDE_BELOW
            return Waypoint(np.array([*view.ee[:2], CARRY_HEIGHT]) if dropped else view.ee.copy(), grip=False)
        return pick(view.ee, view.target_position, view.finger_opening)

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


def pick(ee: np.ndarray, obj: np.ndarray, finger_opening: float) -> Waypoint:
    """Down onto the object and close at the grasp point (unless the fingers already closed on nothing)."""
    grasp = obj + [0.0, 0.0, GRASP_ABOVE]
    close = reached(ee, grasp, CLOSE_WITHIN) and finger_opening > EMPTY_FINGERS
    return Waypoint(approach(ee, obj[:2], grasp[2], cross_within=0.02), grip=close)


def carry(ee: np.ndarray, box: np.ndarray) -> Waypoint:
    """Straight up, across to over the box, down to the drop height, and open there."""
    drop = np.array([*box[:2], DROP_HEIGHT])
    return Waypoint(approach(ee, box[:2], DROP_HEIGHT, cross_within=0.01), grip=not reached(ee, drop, RELEASE_WITHIN))


def approach(ee: np.ndarray, xy: np.ndarray, low: float, cross_within: float) -> np.ndarray:
    """Over `xy` at the carry height, and down to height `low` from 1-3 cm of it in x, y; low and farther than
    `cross_within` (+ 2 cm) from it, rise before moving across (so the hand does not sweep the objects aside)."""
    off = float(np.linalg.norm(ee[:2] - xy))
    down = 1.0 - ramp(off - 0.01, 0.02)
    may_cross = max(1.0 - ramp(off - cross_within, 0.02), ramp(ee[2] - CARRY_HEIGHT + 0.03, 0.02))
    return np.array([*(ee[:2] + may_cross * (xy - ee[:2])), CARRY_HEIGHT + down * (low - CARRY_HEIGHT)])
