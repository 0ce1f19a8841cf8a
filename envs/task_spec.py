"""A task is data: a small serialisable record of what must be done, independent of where things stand."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from envs.objects import ObjectIdentity, check_split, colour_split, sample_identities, validate_shape

FAMILIES = ("reach", "push", "pick_place")
# How many candidate objects and containers each family puts on the table (only the video tells which one).
NUM_OBJECTS = {"reach": 3, "push": 2, "pick_place": 2}
NUM_CONTAINERS = {"reach": 0, "push": 0, "pick_place": 2}


@dataclass(frozen=True)
class TaskSpec:
    """Family, the candidate objects (and containers), and which one is the target.

    The arrangement (positions) is not part of the task: it is drawn from the episode seed, so one task has
    many demonstrations. For `push` the goal region's position is part of the arrangement, too.
    """

    family: str
    objects: tuple[ObjectIdentity, ...]
    target: int
    containers: tuple[ObjectIdentity, ...] = field(default_factory=tuple)
    target_container: int = -1
    split: str = "train"

    def __post_init__(self) -> None:
        validate_task(self)

    @property
    def target_object(self) -> ObjectIdentity:
        return self.objects[self.target]

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "objects": [o.to_dict() for o in self.objects],
            "target": self.target,
            "containers": [c.to_dict() for c in self.containers],
            "target_container": self.target_container,
            "split": self.split,
        }

    @staticmethod
    def from_dict(d: dict) -> "TaskSpec":
        try:
            return TaskSpec(
                family=str(d["family"]),
                objects=tuple(ObjectIdentity.from_dict(o) for o in d["objects"]),
                target=int(d["target"]),
                containers=tuple(ObjectIdentity.from_dict(c) for c in d.get("containers", ())),
                target_container=int(d.get("target_container", -1)),
                split=str(d.get("split", "train")),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"invalid task spec {d!r}: {e}") from e

    def task_id(self) -> str:
        """A stable readable identifier (used as the HDF5 group name)."""
        objs = "-".join(f"{o.shape.replace('mesh:', 'm')}h{o.hue}" for o in self.objects)
        tail = f"_c{self.target_container}" if self.containers else ""
        return f"{self.family}_{objs}_t{self.target}{tail}"

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def validate_task(task: TaskSpec) -> None:
    if task.family not in FAMILIES:
        raise ValueError(f"unknown task family {task.family!r}; allowed: {', '.join(FAMILIES)}")
    check_split(task.split)
    n_obj, n_cont = NUM_OBJECTS[task.family], NUM_CONTAINERS[task.family]
    if len(task.objects) != n_obj:
        raise ValueError(f"{task.family} needs exactly {n_obj} objects, got {len(task.objects)}")
    if len(task.containers) != n_cont:
        raise ValueError(f"{task.family} needs exactly {n_cont} containers, got {len(task.containers)}")
    for o in task.objects:
        validate_shape(o.shape)
        if o.split() != task.split:
            raise ValueError(f"object {o} does not belong to split {task.split!r} (shape and colour must both)")
    for c in task.containers:
        if c.shape != "box" or colour_split(c.hue) != task.split:
            raise ValueError(f"container {c} must be a 'box' with a colour of split {task.split!r}")
    if len({c.hue for c in task.containers}) != len(task.containers):
        raise ValueError("the containers of a task must have different colours")
    if len({o.hue for o in task.objects}) != len(task.objects):
        raise ValueError("the candidate objects of a task must have different colours")
    if not 0 <= task.target < n_obj:
        raise ValueError(f"target must be in [0, {n_obj}), got {task.target}")
    if n_cont and not 0 <= task.target_container < n_cont:
        raise ValueError(f"target_container must be in [0, {n_cont}), got {task.target_container}")
    if not n_cont and task.target_container != -1:
        raise ValueError(f"{task.family} has no containers; target_container must be -1")


def sample_task(rng: np.random.Generator, family: str, split: str) -> TaskSpec:
    """A random task of one family with identities from one split; the target is uniform among candidates."""
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r}; allowed: {', '.join(FAMILIES)}")
    n_obj, n_cont = NUM_OBJECTS[family], NUM_CONTAINERS[family]
    objects = sample_identities(rng, split, n_obj)
    # containers are open boxes: their shape is fixed, only the hue identifies them
    containers = tuple(ObjectIdentity("box", c.hue) for c in sample_identities(rng, split, n_cont)) if n_cont else ()
    target = int(rng.integers(n_obj))
    target_container = int(rng.integers(n_cont)) if n_cont else -1
    return TaskSpec(family, objects, target, containers, target_container, split)
