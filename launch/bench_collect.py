"""Benchmark of the collection tool and the reader (not a test): prints the figures recorded in docs/demos.md.

    python -m launch.bench_collect [--family push] [--image-size 64] [--tasks 12] [--out /tmp/bench_collect]

1. raw: one env in this process, for each task one expert episode and one human video (the first seed of each
   stream), nothing stored: the simulator + renderer ceiling.
2. oneshot-collect's `collect` with 1 and 2 workers on the same tasks (1 demo + 1 video per task, 2 tasks per shard):
   task pairs per minute, and simulated episodes per second against raw (failed episodes are retried, so kept
   pairs can be fewer than simulated ones). Also CPU seconds per simulated episode over all processes: on a
   machine that others use at the same time, wall-time ratios mean little and CPU-time ratios still do.
3. the reader: (video, demo) pairs into uint8 torch tensors on one thread, frames per second (video + demo frames),
   with the episode cache off (every pair decompressed from HDF5) and on (default size).
"""

from __future__ import annotations


import argparse
import dataclasses
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demos.collect import collect, make_env, record_demo, record_video, stream_index
from demos.config import CollectConfig, EnvConfig
from demos.seeds import split_tasks, stream_seed


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the collect workers, once the pool is closed)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@dataclass
class Throughput:
    pairs_per_min: float  # kept task pairs (1 demo + 1 video) per minute of wall time
    episodes_per_s: float  # simulated episodes (kept or not) per second of wall time
    cpu_per_episode: float  # CPU seconds per simulated episode, all processes: robust to other load on the machine
    kept: str = ""

    def line(self, name: str, raw: Throughput | None = None) -> str:
        text = (f"{name:<28}{self.pairs_per_min:7.1f} task pairs/min {self.episodes_per_s:5.2f} episodes/s "
                f"{self.cpu_per_episode:5.2f} CPU s/episode")
        if raw:
            text += (f"  = {100 * self.episodes_per_s / raw.episodes_per_s:3.0f}% of raw by wall time, "
                     f"{100 * raw.cpu_per_episode / self.cpu_per_episode:3.0f}% by CPU time (episodes kept {self.kept})")
        return text


def raw_throughput(cfg: CollectConfig) -> Throughput:
    """Bare simulation + rendering in one process, on the first seed of each stream."""
    env = make_env(cfg)
    tasks = split_tasks(cfg.base_seed, cfg.env.family, cfg.split, cfg.num_tasks, cfg.all_targets)
    start, cpu = time.perf_counter(), cpu_seconds()
    for i, task in enumerate(tasks):
        record_demo(env, task, stream_seed(cfg.base_seed, cfg.split, stream_index(cfg, i, "demo"), "demo", 0), 0)
        record_video(env, stream_seed(cfg.base_seed, cfg.split, stream_index(cfg, i, "video"), "video", 0), 0)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    env.close()
    return Throughput(60 * len(tasks) / seconds, 2 * len(tasks) / seconds, cpu / (2 * len(tasks)))


def collect_throughput(cfg: CollectConfig) -> Throughput:
    """A whole collect job (pool start, task list, simulation, HDF5 writing, manifest): failures are retried."""
    shutil.rmtree(cfg.out, ignore_errors=True)
    cpu = cpu_seconds()
    report = collect(cfg)
    cpu = cpu_seconds() - cpu
    attempts = report.total("attempts", "demo") + report.total("attempts", "video")
    kept = report.total("kept", "demo") + report.total("kept", "video")
    tasks = report.total("tasks") - report.total("skipped_tasks")
    return Throughput(60 * tasks / report.seconds, attempts / report.seconds, cpu / attempts, f"{kept}/{attempts}")


def reader_throughput(root: Path, image_size: int, cache_episodes: int, pairs: int) -> tuple[float, float]:
    """Frames (video + demo) of random pairs read into uint8 tensors on one thread: per wall second, per CPU second."""
    # imported here, not at the top: spawned collect workers import this module, and torch would slow their start
    import torch

    from demos.reader import PairDataset

    torch.set_num_threads(1)
    ds = PairDataset(root, "train", image_size=image_size, cache_episodes=cache_episodes)
    rng = np.random.default_rng(0)
    order = rng.integers(len(ds), size=pairs)
    ds[int(order[0])]  # open the files outside the timing
    start, cpu = time.perf_counter(), time.process_time()
    frames = 0
    for i in order:
        pair = ds[int(i)]
        frames += pair.video.shape[0] + pair.images.shape[0]
    return frames / (time.perf_counter() - start), frames / (time.process_time() - cpu)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="push")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--tasks", type=int, default=12)
    p.add_argument("--tasks-per-shard", type=int, default=2, help="each worker should get several shards")
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_collect"))
    args = p.parse_args()
    base = CollectConfig(env=EnvConfig(family=args.family, image_size=args.image_size), out="", num_tasks=args.tasks,
                         tasks_per_shard=args.tasks_per_shard, progress=False)
    print(f"{args.family}, {args.image_size}x{args.image_size}, {args.tasks} tasks, 1 demo + 1 video each; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    raw = raw_throughput(base)
    print(raw.line("raw env + render, 1 process"))
    results = {}
    for workers in (1, 2):
        results[workers] = collect_throughput(dataclasses.replace(base, workers=workers, out=str(args.out / f"w{workers}")))
        print(results[workers].line(f"collect, {workers} worker{'s' if workers > 1 else ''}", raw))
    print(f"speed-up with 2 workers (wall time): {results[2].episodes_per_s / results[1].episodes_per_s:.2f}x")
    for cache in (0, 64):
        wall, cpu = reader_throughput(args.out / "w1", args.image_size, cache, pairs=400)
        print(f"reader, 1 thread, cache {cache:2d} episodes: {wall:9.0f} frames/s into uint8 tensors "
              f"({cpu:.0f} frames per CPU second)")
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
