"""What a task family provides: an arrangement, a success rule, a scripted expert and a human-like plan.

The expert works from privileged simulator state (it knows the target); the policy only ever sees images,
its own proprioception and, for adaptation, the video.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from envs.bullet import World
from envs.scene import Arrangement, object_name
from envs.task_spec import TaskSpec


@dataclass(frozen=True)
class Waypoint:
    """Where the effector should go next, whether it grips, and (for human plans) how many frames it takes."""

    position: np.ndarray
    grip: bool
    frames: int = 0


@dataclass
class EpisodeView:
    """What a family may read about the current robot episode."""

    world: World
    task: TaskSpec
    arrangement: Arrangement
    ee: np.ndarray
    holding: int | None  # index of the object held by the grasp assist, if any
    finger_opening: float  # metres between the fingers (envs.robot.Panda.finger_opening; the policy sees it too)

    def object_position(self, i: int) -> np.ndarray:
        return self.world.position(object_name(i))

    @property
    def target_position(self) -> np.ndarray:
        return self.object_position(self.task.target)


class TaskFamily(ABC):
    name: str
    max_steps: int
    success_rule: str  # one line for the README and the dataset manifest

    def __init__(self) -> None:
        self.phase = 0

    def reset_expert(self) -> None:
        self.phase = 0

    @abstractmethod
    def arrange(self, rng: np.random.Generator, task: TaskSpec) -> Arrangement:
        """Positions of everything for one episode."""

    @abstractmethod
    def achieved(self, world: World, task: TaskSpec, arrangement: Arrangement, effector: np.ndarray, holding: int | None) -> bool:
        """Whether the task's condition holds at this instant."""

    @abstractmethod
    def success(self, history: list[bool]) -> bool:
        """Episode success so far, from the per-step `achieved` history."""

    @abstractmethod
    def expert_waypoint(self, view: EpisodeView) -> Waypoint:
        """The scripted expert's next waypoint (may advance the expert's phase)."""

    @abstractmethod
    def human_plan(self, rng: np.random.Generator, world: World, task: TaskSpec, arrangement: Arrangement) -> list[Waypoint]:
        """Hand waypoints for a human-like execution; grip=True holds the target in the hand."""

    def chosen_object(self, view: EpisodeView) -> int:
        """The candidate object the behaviour went for (the target or a distractor), whether or not it succeeded:
        the one nearest the effector. Families that move objects take the one moved farthest instead."""
        return nearest_object(view)

    def _advance_when(self, reached: bool) -> None:
        if reached:
            self.phase += 1


MOVED = 0.02  # metres: an object displaced farther than this from where it was placed has been moved


def nearest_object(view: EpisodeView) -> int:
    distances = [np.linalg.norm(view.ee - view.object_position(i)) for i in range(len(view.task.objects))]
    return int(np.argmin(distances))


def moved_object(view: EpisodeView) -> int:
    """The object moved farthest (in x, y) from where it was placed; the nearest one if none has moved."""
    moved = [np.linalg.norm(view.object_position(i)[:2] - start[:2]) for i, start in enumerate(view.arrangement.objects)]
    return int(np.argmax(moved)) if max(moved) > MOVED else nearest_object(view)


def reached(ee: np.ndarray, target: np.ndarray, tol: float = 0.012) -> bool:
    return bool(np.linalg.norm(ee - target) < tol)


def ramp(x: float, width: float) -> float:
    """0 for x <= 0, 1 for x >= width, linear between: a soft threshold."""
    return float(np.clip(x / width, 0.0, 1.0))


def count_trailing(history: list[bool]) -> int:
    n = 0
    for h in reversed(history):
        if not h:
            break
        n += 1
    return n


def jitter(rng: np.random.Generator, scale: float) -> np.ndarray:
    return rng.normal(0.0, scale, size=3)
