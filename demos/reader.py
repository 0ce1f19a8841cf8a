"""The training reader: (human video, robot demo) pairs of the same task, as uint8/float32 torch tensors.

    ds = PairDataset("data/push", "train", image_size=64)
    pair = ds[0]                      # one pair: Pair(video, images, states, actions, task, target_hue, target_positions)
    batch = ds.sample(np.random.default_rng(0), 4)  # a meta-batch: 4 distinct tasks, stacked
    loader = DataLoader(ds, batch_sampler=MetaBatchSampler(ds, num_tasks=4, num_batches=1000, seed=0), num_workers=2)

HDF5 files are opened lazily, per process: a handle opened before a fork is dropped in the child, never used there
(h5py handles must not cross a fork), and pickling (spawned DataLoader workers) sends no handles. Each process
keeps a small LRU cache of decompressed episodes.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from demos.format import DatasetError, DatasetMismatchError, read_manifest
from demos.shards import (open_shard, read_depth, read_episode, read_target_positions, resample_indices,
                          with_depth_channel)
from envs.objects import NUM_HUES


class Pair(NamedTuple):
    """One task's human video and robot demo (batched: a leading batch dimension on every field)."""

    video: torch.Tensor  # uint8 (T, H, W, 3): the human-proxy video, resampled to the demo's length T
    # uint8 (T, H, W, 3): the robot camera before each action; (T, H, W, 4) from a reader asked for depth, whose
    # fourth channel is the camera's depth levels (envs.core.encode_depth)
    images: torch.Tensor
    states: torch.Tensor  # float32 (T, 11): end-effector position, gripper opening, 7 joint positions
    actions: torch.Tensor  # float32 (T, 4): end-effector velocity (x, y, z) and gripper command
    task: torch.Tensor  # int64 (): index of the task in `PairDataset.tasks`
    # float32 (2,): (cos, sin) of the target object's hue angle, from the task spec. A training label only (an
    # auxiliary loss may use it); no model reads it, and test-time adaptation never has it.
    target_hue: torch.Tensor
    # float32 (T, 3): the target object's centre at each demo frame, a training label like target_hue; all NaN for a
    # dataset of format 1, which did not record it (PairDataset.has_target_positions).
    target_positions: torch.Tensor


def target_hue(spec: dict) -> torch.Tensor:
    """(cos, sin) of the hue angle of the task's target object: hues lie on a circle, so nearby bins stay near."""
    angle = 2 * math.pi * spec["objects"][spec["target"]]["hue"] / NUM_HUES
    return torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float32)


@dataclass(frozen=True)
class TaskEntry:
    """A task of the split as the manifest lists it."""

    id: str
    spec: dict
    shard: str
    num_demos: int
    num_videos: int


class PairDataset(Dataset):
    """Every (video, demo) pair of every task of a split; item i = task i // (V*D), video and demo from the rest.

    `image_size` is what the model expects: a dataset with other images is refused, as is one of another format
    version (the manifest is checked when the reader is built). `family`, when given, must match too. With `depth`
    the demos' images carry the camera's depth as a fourth channel (a dataset collected without it is refused).
    """

    def __init__(self, root: str | Path, split: str, *, image_size: int, family: str | None = None,
                 cache_episodes: int = 64, depth: bool = False) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.split = split
        self.image_size = image_size
        self.depth = depth
        self.tasks = self._check(family)
        self.demo_length = int(self.manifest["env"]["max_episode_steps"])
        self.has_target_positions = self.manifest["format_version"] >= 2
        self.num_demos, self.num_videos = self.tasks[0].num_demos, self.tasks[0].num_videos
        self.cache_episodes = cache_episodes
        self._pid: int | None = None
        self._files: dict[str, h5py.File] = {}
        self._cache: OrderedDict[tuple[int, str, int], tuple[np.ndarray, ...]] = OrderedDict()

    def _check(self, family: str | None) -> list[TaskEntry]:
        env, where = self.manifest["env"], self.root / "manifest.json"
        size = env["config"]["image_size"]
        if size != self.image_size:
            raise DatasetMismatchError(f"{where}: images are {size}x{size}, the reader was asked for {self.image_size}x{self.image_size}; "
                                       f"collect with env.image_size={self.image_size} or build the model for {size}")
        if self.depth and not env["config"].get("depth", False):
            raise DatasetMismatchError(f"{where}: collected without the camera's depth, which the model reads; "
                                       "collect with env.depth=true (or train with policy.query_depth=false)")
        if family is not None and env["config"]["family"] != family:
            raise DatasetMismatchError(f"{where}: a {env['config']['family']!r} dataset, the reader was asked for {family!r}")
        if self.split not in self.manifest["splits"]:
            raise DatasetError(f"{where}: no split {self.split!r} (present: {', '.join(sorted(self.manifest['splits']))})")
        tasks = [TaskEntry(t["id"], t["spec"], t["shard"], len(t["demos"]), len(t["videos"])) for t in self.manifest["splits"][self.split]["tasks"]]
        if not tasks:
            raise DatasetError(f"{where}: split {self.split!r} has no tasks")
        if len({(t.num_demos, t.num_videos) for t in tasks}) != 1:
            raise DatasetError(f"{where}: tasks of split {self.split!r} have different numbers of demos or videos")
        return tasks

    # ----- torch Dataset ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tasks) * self.num_videos * self.num_demos

    def __getitem__(self, index: int) -> Pair:
        if not 0 <= index < len(self):
            raise IndexError(f"pair index {index} out of range [0, {len(self)})")
        task, rest = divmod(int(index), self.num_videos * self.num_demos)
        video, demo = divmod(rest, self.num_demos)
        return self.pair(task, video, demo)

    def pair(self, task: int, video: int, demo: int) -> Pair:
        """Video `video` and demo `demo` of task `task` (indices into the split's lists)."""
        (frames,) = self._episode(task, "videos", video)
        images, states, actions, positions, *depth = self._episode(task, "demos", demo)
        if depth:
            images = with_depth_channel(images, depth[0])
        resampled = frames[resample_indices(len(frames), len(images))]
        return Pair(torch.from_numpy(resampled), torch.from_numpy(images.copy()), torch.from_numpy(states.copy()),
                    torch.from_numpy(actions.copy()), torch.tensor(task, dtype=torch.int64),
                    target_hue(self.tasks[task].spec), torch.from_numpy(positions.copy()))

    # ----- in-process sampling ----------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, num_tasks: int) -> Pair:
        """A meta-batch: `num_tasks` distinct tasks, a random video and demo of each, stacked along a new dim 0."""
        return collate([self[i] for i in sample_batch(rng, len(self.tasks), self.num_videos * self.num_demos, num_tasks)])

    def batches(self, rng: np.random.Generator, num_tasks: int) -> Iterator[Pair]:
        """Endless meta-batches (see `sample`), for a training loop without a DataLoader."""
        while True:
            yield self.sample(rng, num_tasks)

    # ----- files and cache ---------------------------------------------------------------------------------
    def _file(self, shard: str) -> h5py.File:
        if self._pid != os.getpid():  # first use in this process (e.g. a forked DataLoader worker): forget inherited handles
            self._pid, self._files, self._cache = os.getpid(), {}, OrderedDict()
        if shard not in self._files:
            self._files[shard] = open_shard(self.root / shard)
        return self._files[shard]

    def _episode(self, task: int, kind: str, k: int) -> tuple[np.ndarray, ...]:
        key = (task, kind, k)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        entry = self.tasks[task]
        f = self._file(entry.shard)
        value = read_episode(f, entry.id, kind, k)
        if kind == "demos":  # format 1 recorded no positions: the label is unknown (NaN) at every frame
            positions = (read_target_positions(f, entry.id, k) if self.has_target_positions
                         else np.full((len(value[0]), 3), np.nan, dtype=np.float32))
            value = (*value, positions, *([read_depth(f, entry.id, k)] if self.depth else []))
        self._cache[key] = value
        if len(self._cache) > self.cache_episodes:
            self._cache.popitem(last=False)
        return value

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files, self._cache = {}, OrderedDict()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pid": None, "_files": {}, "_cache": OrderedDict()}


def sample_batch(rng: np.random.Generator, num_tasks_total: int, pairs_per_task: int, num_tasks: int) -> list[int]:
    """Dataset indices of one meta-batch: distinct tasks, a uniform pair within each."""
    if not 1 <= num_tasks <= num_tasks_total:
        raise ValueError(f"a meta-batch needs 1 to {num_tasks_total} distinct tasks, got {num_tasks}")
    tasks = rng.choice(num_tasks_total, size=num_tasks, replace=False)
    return [int(t) * pairs_per_task + int(rng.integers(pairs_per_task)) for t in tasks]


def collate(pairs: list[Pair]) -> Pair:
    return Pair(*(torch.stack(field) for field in zip(*pairs)))


class MetaBatchSampler(Sampler[list[int]]):
    """Meta-batches of distinct tasks for `DataLoader(ds, batch_sampler=...)`; each pass draws new ones.

    Pass p uses the generator seeded with (seed, p), so runs are reproducible and passes differ.
    """

    def __init__(self, dataset: PairDataset, num_tasks: int, num_batches: int, seed: int = 0) -> None:
        self.num_tasks_total, self.pairs_per_task = len(dataset.tasks), dataset.num_videos * dataset.num_demos
        self.num_tasks, self.num_batches, self.seed = num_tasks, num_batches, seed
        self.passes = 0

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.passes])
        self.passes += 1
        for _ in range(self.num_batches):
            yield sample_batch(rng, self.num_tasks_total, self.pairs_per_task, self.num_tasks)
