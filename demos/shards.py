"""HDF5 shards: episodes in, episodes out. One shard holds whole tasks; a shard is written once, atomically.

Every episode field is one dataset chunked along time (the whole episode in one chunk at the usual image sizes),
so a reader decompresses an episode in one call. Fletcher-32 checksums let a read name the damaged dataset.
No timestamps are stored (h5py's default), so the same episodes give the same bytes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from demos.format import ShardError

CHUNK_BYTES = 4 << 20  # at most this many bytes per chunk (a 70-frame 64x64 episode is 0.9 MB)
GZIP_LEVEL = 4
META = "meta"  # a JSON string dataset at the shard's root: split, plan, tasks, seeds, code version


@dataclass
class Demo:
    """A robot demonstration: T observations and the T expert actions taken from them."""

    images: np.ndarray  # uint8 (T, H, W, 3)
    states: np.ndarray  # float32 (T, 11)
    actions: np.ndarray  # float32 (T, 4)
    target_positions: np.ndarray  # float32 (T, 3): the target object's centre at each frame (a training label)
    seed: int
    attempt: int
    # a driven demo's first steps, executed by a trained policy (the expert's actions recorded); None: an expert demo
    driven_steps: int | None = None
    depth: np.ndarray | None = None  # uint8 (T, H, W): the robot camera's depth levels (env depth=true), else None

    def policy_images(self) -> np.ndarray:
        """The frames, with the depth levels as a fourth channel when recorded (what a policy reading depth sees)."""
        return self.images if self.depth is None else with_depth_channel(self.images, self.depth)

    def record(self) -> dict:
        return {"seed": self.seed, "attempt": self.attempt, "length": len(self.actions)} | (
            {} if self.driven_steps is None else {"driven_steps": self.driven_steps})


@dataclass
class Video:
    """A human-proxy video of the task: frames only."""

    frames: np.ndarray  # uint8 (T', H, W, 3)
    seed: int
    attempt: int
    camera_eye: list[float]

    def record(self) -> dict:
        return {"seed": self.seed, "attempt": self.attempt, "length": len(self.frames), "camera_eye": self.camera_eye}


@dataclass
class TaskEpisodes:
    """What collection produced for one task. A skipped task (too many failures) has no episodes stored."""

    index: int
    spec: dict
    task_id: str
    demos: list[Demo] = field(default_factory=list)
    videos: list[Video] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=lambda: {"demo": 0, "video": 0})
    skipped: bool = False

    def record(self) -> dict:
        return {"index": self.index, "id": self.task_id, "spec": self.spec, "skipped": self.skipped, "failures": self.failures,
                "demos": [d.record() for d in self.demos], "videos": [v.record() for v in self.videos]}


def _filters(compression: str) -> dict:
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": GZIP_LEVEL, "fletcher32": True}
    if compression == "lzf":
        return {"compression": "lzf", "fletcher32": True}
    if compression == "none":
        return {"fletcher32": True}
    raise ValueError(f"unknown compression {compression!r}; allowed: gzip, lzf, none")


def _put(group: h5py.Group, name: str, data: np.ndarray, filters: dict) -> None:
    row_bytes = max(1, data[0].nbytes if len(data) else 1)
    rows = int(max(1, min(len(data), CHUNK_BYTES // row_bytes)))
    group.create_dataset(name, data=data, chunks=(rows, *data.shape[1:]), **filters)


def write_shard(path: Path, tasks: list[TaskEpisodes], meta: dict, compression: str) -> bool:
    """Write a shard under a temporary name, sync it, and link it to `path` without ever replacing a file there.

    Returns False when `path` appeared meanwhile (another job wrote the same shard: same seeds, same content).
    """
    filters = _filters(compression)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with h5py.File(tmp, "w") as f:
        f.create_dataset(META, data=json.dumps({**meta, "tasks": [t.record() for t in tasks]}, sort_keys=True))
        for t in tasks:
            if t.skipped:
                continue
            group = f.create_group(f"tasks/{t.task_id}")
            for k, demo in enumerate(t.demos):
                g = group.create_group(f"demos/{k}")
                for name in DEMO_FIELDS:
                    _put(g, name, getattr(demo, name), filters)
                if demo.depth is not None:
                    _put(g, DEPTH, demo.depth, filters)
            for k, video in enumerate(t.videos):
                _put(group.create_group(f"videos/{k}"), "frames", video.frames, filters)
    _fsync(tmp)
    try:
        os.link(tmp, path)  # atomic and never clobbers, unlike rename
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
        _fsync(path.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(path: Path) -> None:
    """Delete what a killed job left while writing `path` (only ever called by the job that owns that shard)."""
    for tmp in path.parent.glob(f"{path.name}.tmp-*"):
        tmp.unlink(missing_ok=True)


def open_shard(path: Path) -> h5py.File:
    """Open a shard read-only, turning a missing or truncated file into an error that names it."""
    if not path.exists():
        raise ShardError(f"{path}: shard missing (collect again with the same command to redo it)")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise ShardError(f"{path}: shard unreadable, probably truncated or overwritten ({e}); "
                         "delete it and run the same collect command again to redo it") from None


def read_meta(f: h5py.File) -> dict:
    try:
        return json.loads(f[META][()])
    except (KeyError, ValueError, OSError) as e:
        raise ShardError(f"{f.filename}: field {META!r} missing or unreadable ({e})") from None


BEHAVIOUR_FIELDS = ("images", "states", "actions")  # what a demo shows and does: every format has them
TARGET_POSITIONS = "target_positions"  # a training label, from format 2 on
DEMO_FIELDS = (*BEHAVIOUR_FIELDS, TARGET_POSITIONS)
VIDEO_FIELDS = ("frames",)
DEPTH = "depth"  # uint8 (T, H, W), in the demos of a dataset collected with env.depth=true


def with_depth_channel(images: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """uint8 images (..., H, W, 3) and depth levels (..., H, W) -> (..., H, W, 4): what a policy reading depth sees."""
    return np.concatenate([images, depth[..., None]], axis=-1)


def demo_fields(format_version: int, depth: bool = False) -> tuple[str, ...]:
    """The fields of a demo in a dataset of that format: format 1 has no target positions; one collected with
    env.depth=true has the depth levels too."""
    return tuple(f for f in DEMO_FIELDS if format_version >= 2 or f != TARGET_POSITIONS) + ((DEPTH,) if depth else ())


def episode_group(f: h5py.File, task_id: str, kind: str, k: int) -> h5py.Group:
    """The group of episode `k` of a task; `kind` is "demos" or "videos"."""
    path = f"tasks/{task_id}/{kind}/{k}"
    try:
        return f[path]
    except KeyError:
        raise ShardError(f"{f.filename}: no episode {path!r}") from None


def read_episode(f: h5py.File, task_id: str, kind: str, k: int) -> tuple[np.ndarray, ...]:
    """The arrays of one episode: (images, states, actions) for a demo, (frames,) for a video."""
    group = episode_group(f, task_id, kind, k)
    return tuple(group[name][()] for name in (BEHAVIOUR_FIELDS if kind == "demos" else VIDEO_FIELDS))


def read_target_positions(f: h5py.File, task_id: str, k: int) -> np.ndarray:
    """The target's centre (T, 3) at each frame of demo `k` (format 2 on)."""
    group = episode_group(f, task_id, "demos", k)
    if TARGET_POSITIONS not in group:
        raise ShardError(f"{f.filename}: {group.name} has no {TARGET_POSITIONS!r} (a dataset of format 1: collect it again)")
    return group[TARGET_POSITIONS][()]


def read_depth(f: h5py.File, task_id: str, k: int) -> np.ndarray:
    """The robot camera's depth levels (T, H, W) at each frame of demo `k` (a dataset collected with env.depth=true)."""
    group = episode_group(f, task_id, "demos", k)
    if DEPTH not in group:
        raise ShardError(f"{f.filename}: {group.name} has no {DEPTH!r} (collect with env.depth=true)")
    return group[DEPTH][()]


def resample_indices(length: int, target: int) -> np.ndarray:
    """Nearest-frame indices that stretch or squeeze `length` frames to `target`, first and last frame kept."""
    return np.rint(np.linspace(0, length - 1, target)).astype(np.int64)
