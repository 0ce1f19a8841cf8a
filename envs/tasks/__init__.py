"""Task families, one file each."""

from envs.tasks.base import TaskFamily
from envs.tasks.pick_place import PickPlace
from envs.tasks.push import Push
from envs.tasks.reach import Reach

FAMILY_CLASSES: dict[str, type[TaskFamily]] = {"reach": Reach, "push": Push, "pick_place": PickPlace}

__all__ = ["FAMILY_CLASSES", "TaskFamily"]
