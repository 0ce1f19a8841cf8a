"""PyBullet tabletop tasks with a Franka Panda; importing this package registers the gymnasium ids."""

import gymnasium as gym

from envs.core import ACTION_DIM, IMAGE_SIZE_RANGE, STATE_DIM, OneShotEnv
from envs.objects import SPLITS, ObjectIdentity
from envs.task_spec import FAMILIES, TaskSpec, sample_task
from envs.tasks import FAMILY_CLASSES

ENV_IDS: dict[str, str] = {"reach": "OneShot/Reach-v0", "push": "OneShot/Push-v0", "pick_place": "OneShot/PickPlace-v0"}

for _family, _env_id in ENV_IDS.items():
    if _env_id not in gym.registry:
        gym.register(_env_id, entry_point="envs.core:OneShotEnv", max_episode_steps=FAMILY_CLASSES[_family].max_steps,
                     kwargs={"family": _family})


def make(family: str, **kwargs) -> gym.Env:
    """`gym.make` by family name, with a clear error for an unknown family."""
    if family not in ENV_IDS:
        raise ValueError(f"unknown task family {family!r}; allowed: {', '.join(ENV_IDS)}")
    return gym.make(ENV_IDS[family], **kwargs)


__all__ = ["ACTION_DIM", "ENV_IDS", "FAMILIES", "IMAGE_SIZE_RANGE", "SPLITS", "STATE_DIM", "ObjectIdentity", "OneShotEnv",
           "TaskSpec", "make", "sample_task"]
