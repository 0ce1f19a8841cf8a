"""Where every task and episode of a dataset comes from: one base seed, disjoint streams, no global state.

The rule (also in docs/demos.md). Every random draw of a collection is keyed by
(base_seed, split, task index, kind, attempt), kind being task (the task spec), demo (robot episode), video
(human-proxy video) or driven (a robot episode begun by a trained policy), and attempt counting draws within that
stream (0, 1, 2, ...). The key is packed into one integer by bit fields

    seed = base_seed << 45 | split << 42 | task << 22 | kind << 20 | attempt

so two different keys never give the same seed: the streams of different splits, tasks and kinds are disjoint by
construction, not by luck. The integer is only ever used as a seed (gymnasium's `reset(seed=...)` and
`numpy.random.default_rng` hash it through `SeedSequence`), so structured integers give independent streams.
A failed episode is retried with the next attempt of its stream; the attempt that was kept is recorded.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

import envs
from envs.task_spec import NUM_CONTAINERS, NUM_OBJECTS

KINDS = ("task", "demo", "video", "driven")  # driven: the demos whose first steps a trained policy executes
BASE_SEED_BITS, SPLIT_BITS, TASK_BITS, KIND_BITS, ATTEMPT_BITS = 16, 3, 20, 2, 20
MAX_TASKS = 1 << TASK_BITS
MAX_ATTEMPTS = 1 << ATTEMPT_BITS
MAX_BASE_SEED = (1 << BASE_SEED_BITS) - 1


def stream_seed(base_seed: int, split: str, task: int, kind: str, attempt: int) -> int:
    """The seed of one draw: attempt `attempt` of the `kind` stream of task `task` of `split`."""
    if not 0 <= base_seed <= MAX_BASE_SEED:
        raise ValueError(f"base_seed must be in [0, {MAX_BASE_SEED}], got {base_seed}")
    if not 0 <= task < MAX_TASKS:
        raise ValueError(f"task index must be in [0, {MAX_TASKS}), got {task}")
    if not 0 <= attempt < MAX_ATTEMPTS:
        raise ValueError(f"attempt must be in [0, {MAX_ATTEMPTS}), got {attempt}")
    fields = ((envs.SPLITS.index(split), SPLIT_BITS), (task, TASK_BITS), (KINDS.index(kind), KIND_BITS), (attempt, ATTEMPT_BITS))
    seed = base_seed
    for value, bits in fields:
        seed = seed << bits | value
    return seed


def split_tasks(base_seed: int, family: str, split: str, num_tasks: int, all_targets: bool = False) -> list[envs.TaskSpec]:
    """The first `num_tasks` distinct tasks of a split's stream (a duplicate is redrawn with the next attempt).

    Distinct because a task's id names its HDF5 group; a prefix of a longer list is the shorter list.
    With `all_targets`, the stream draws object sets instead, and each set gives one task per choice of target
    (and target container): in such data a scene never tells the target, even to a model that has memorised the
    training scenes; only the video does.
    """
    per_set = targets_per_set(family) if all_targets else 1
    sets: list[envs.TaskSpec] = []
    seen: set[str] = set()
    for index in range(-(-num_tasks // per_set)):
        for attempt in range(MAX_ATTEMPTS):
            task = envs.sample_task(np.random.default_rng(stream_seed(base_seed, split, index, "task", attempt)), family, split)
            if _scene_id(task, all_targets) not in seen:
                break
        else:  # pragma: no cover - the identity pools hold millions of distinct tasks
            raise ValueError(f"cannot draw a distinct task {index} of {family}/{split}")
        seen.add(_scene_id(task, all_targets))
        sets.append(task)
    if not all_targets:
        return sets
    return [with_target(sets[i // per_set], i % per_set) for i in range(num_tasks)]


def targets_per_set(family: str) -> int:
    """Tasks that share one object set under `all_targets`: every (target object, target container) choice."""
    return NUM_OBJECTS[family] * max(NUM_CONTAINERS[family], 1)


def with_target(task: envs.TaskSpec, choice: int) -> envs.TaskSpec:
    """`task` with target choice `choice` (object first, then container) of `targets_per_set`."""
    n_obj = len(task.objects)
    container = choice // n_obj if task.containers else -1
    return replace(task, target=choice % n_obj, target_container=container)


def _scene_id(task: envs.TaskSpec, all_targets: bool) -> str:
    """What must differ between draws: the task, or (all_targets) the object set whatever its target."""
    return (with_target(task, 0) if all_targets else task).task_id()
