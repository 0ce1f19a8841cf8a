"""Meta-batches for training: a pure function of (seed, step), loaded by DataLoader workers, moved to the device ahead.

The meta-batch of step ``s`` is drawn with ``numpy.random.default_rng([seed, TRAIN_STREAM, s])``, so a resumed run
sees exactly the batches an uninterrupted run would, and a data-parallel run sees the same global batch as one
process: each rank loads only its share (a contiguous slice of the batch's tasks). Frames stay uint8 on the host
(4x less to copy than float32); the policy converts them on the device.
"""

from __future__ import annotations

import signal
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from demos.reader import Pair, PairDataset, collate, sample_batch
from imitation.bc import imitation_batch
from imitation.maml import MetaBatch
from imitation.policy import Policy

TRAIN_STREAM = 0  # second seed word of the training batches
VAL_STREAM = 1  # second seed word of the (fixed) validation batches


@dataclass
class LoaderConfig:
    """How meta-batches are read. Group `loader` (`data=` is the dataset path, so the group cannot be called data)."""

    frame_stride: int = 1  # keep every k-th frame of each demo and (resampled) video: k times fewer frames per pass
    # With frame_stride k > 1: each task of a training meta-batch keeps frames o, o + k, ... from an offset o drawn in
    # [0, k) with the batch (validation keeps o = 0, as the rollout does). Without it a run trains on the same 1/k of
    # every demo throughout, and a moment of a few frames (pick_place's close at the grasp point) may never be seen.
    random_offsets: bool = False
    workers: int = 1  # DataLoader worker processes (0 = read in the training process)
    prefetch: int = 2  # meta-batches each worker prepares ahead
    train_split: str = "train"  # split the meta-batches are drawn from
    val_split: str = "val"  # split the validation meta-loss is measured on

    def __post_init__(self) -> None:
        if self.frame_stride < 1:
            raise ValueError(f"loader.frame_stride must be >= 1, got {self.frame_stride}")


def strided_length(length: int, stride: int) -> int:
    """Frames left of a ``length``-frame episode when every ``stride``-th frame is kept (the first one included)."""
    return -(-length // stride)


def strided_frames(length: int, stride: int, offset: int) -> np.ndarray:
    """The frames a pass keeps: ``offset, offset + stride, ...``, ``strided_length(length, stride)`` of them whatever
    the offset (those past the end repeat the last frame), so every task of a batch has the same length."""
    return np.minimum(offset + stride * np.arange(strided_length(length, stride)), length - 1)


class StridedPairs(Dataset):
    """A PairDataset's pairs with every ``stride``-th frame kept from an offset: item ``pair_index * stride + offset``
    (the codes StepBatchSampler yields). Striding here, in the DataLoader workers, copies only the kept frames."""

    TIME_FIELDS = ("video", "images", "states", "actions", "target_positions")

    def __init__(self, pairs: PairDataset, stride: int) -> None:
        self.pairs, self.stride = pairs, stride

    def __len__(self) -> int:
        return len(self.pairs) * self.stride

    def __getitem__(self, code: int) -> Pair:
        index, offset = divmod(int(code), self.stride)
        pair = self.pairs[index]
        if self.stride == 1:
            return pair
        keep = torch.from_numpy(strided_frames(len(pair.images), self.stride, offset))
        return pair._replace(**{name: getattr(pair, name)[keep] for name in self.TIME_FIELDS})


def batch_codes(dataset: PairDataset, seed: int, stream: int, index: int, num_tasks: int, stride: int = 1,
                random_offsets: bool = False) -> list[int]:
    """StridedPairs items of meta-batch ``index`` of a stream: distinct tasks, one (video, demo) pair of each, at frame
    offset 0 or (``random_offsets``) at offsets drawn after the pairs from the same generator."""
    rng = np.random.default_rng([seed, stream, index])
    indices = sample_batch(rng, len(dataset.tasks), dataset.num_videos * dataset.num_demos, num_tasks)
    offsets = rng.integers(0, stride, len(indices)) if random_offsets and stride > 1 else np.zeros(len(indices), int)
    return [i * stride + int(o) for i, o in zip(indices, offsets)]


class StepBatchSampler(Sampler[list[int]]):
    """This rank's share of the training meta-batches of steps ``start, start + 1, ..., stop - 1``, as StridedPairs
    codes."""

    def __init__(self, dataset: PairDataset, num_tasks: int, seed: int, start: int, stop: int,
                 rank: int = 0, world_size: int = 1, stride: int = 1, random_offsets: bool = False) -> None:
        if num_tasks % world_size:
            raise ValueError(f"meta_batch={num_tasks} does not split evenly over {world_size} processes")
        self.dataset, self.num_tasks, self.seed = dataset, num_tasks, seed
        self.start, self.stop = start, stop
        self.stride, self.random_offsets = stride, random_offsets
        share = num_tasks // world_size
        self.slice = slice(rank * share, (rank + 1) * share)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield batch_codes(self.dataset, self.seed, TRAIN_STREAM, step, self.num_tasks, self.stride,
                              self.random_offsets)[self.slice]


def make_loader(dataset: PairDataset, sampler: Sampler[list[int]], cfg: LoaderConfig, pin_memory: bool) -> DataLoader:
    return DataLoader(
        StridedPairs(dataset, cfg.frame_stride),
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.workers,
        prefetch_factor=cfg.prefetch if cfg.workers else None,
        persistent_workers=False,
        pin_memory=pin_memory,
        worker_init_fn=ignore_interrupts,
    )


def ignore_interrupts(worker_id: int) -> None:
    """Loader workers ignore SIGINT. A terminal's Ctrl-C (and `timeout -s INT`) reaches the whole process group; the
    training process alone handles it (keeping its checkpoint) and shuts the workers down. A worker that died of it
    instead would leave a pinning thread's traceback, or a training process waiting for its batch. Nor do they print
    the hang-up that stopping leaves them (``quiet_when_the_trainer_hangs_up``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.excepthook = quiet_when_the_trainer_hangs_up


def quiet_when_the_trainer_hangs_up(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
    """A worker hands its batches' tensors over by file descriptor, served by multiprocessing's ``resource_sharer``
    thread, which reports its errors through ``sys.excepthook``. A training process that stops (Ctrl-C) in the middle
    of such a hand-over resets the connection, and the worker printed that traceback on the shared stderr (1 run in 6
    of test_ctrl_c_in_the_terminal_...). That one case is expected and says nothing; every other error still prints."""
    hung_up = issubclass(kind, (ConnectionResetError, BrokenPipeError))
    if hung_up and any(frame.filename.endswith("resource_sharer.py") for frame in traceback.extract_tb(trace)):
        return
    sys.__excepthook__(kind, error, trace)


def to_meta_batch(policy: Policy, pair: Pair, device: torch.device) -> MetaBatch:
    """The MetaBatch of a (host) meta-batch, on ``device``; frames stay uint8 until the policy converts them."""
    on = [t.to(device, non_blocking=True)
          for t in (pair.video, pair.images, pair.states, pair.actions, pair.target_hue, pair.target_positions)]
    return imitation_batch(policy, *on)


class DevicePrefetcher:
    """Yields (host pair, device MetaBatch), starting the copy of the next batch before the current one is used.

    With pinned host memory and a CUDA device the copy overlaps the meta-step; on a CPU it is a plain pass-through.
    """

    def __init__(self, loader: DataLoader, policy: Policy, device: torch.device) -> None:
        self.pairs, self.policy, self.device = iter(loader), policy, device

    def __iter__(self) -> Iterator[tuple[Pair, MetaBatch]]:
        upcoming = self._next()
        while upcoming is not None:
            current, upcoming = upcoming, self._next()
            yield current

    def _next(self) -> tuple[Pair, MetaBatch] | None:
        pair = next(self.pairs, None)
        return None if pair is None else (pair, to_meta_batch(self.policy, pair, self.device))


def validation_batches(dataset: PairDataset, seed: int, count: int, num_tasks: int, stride: int) -> list[Pair]:
    """The fixed validation meta-batches (the same at every evaluation, so the curve compares like with like)."""
    num_tasks = min(num_tasks, len(dataset.tasks))
    strided = StridedPairs(dataset, stride)
    return [collate([strided[c] for c in batch_codes(dataset, seed, VAL_STREAM, k, num_tasks, stride)])
            for k in range(count)]
