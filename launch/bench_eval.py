"""Benchmark of the evaluation (not a test): prints the figures recorded in docs/evaluate.md.

    python -m launch.bench_eval [--family reach] [--image-size 64] [--tasks 4] [--trials 2] [--out /tmp/bench_eval]

An untrained checkpoint of the default policy (~98k parameters) is enough: the cost of an episode does not depend
on what the weights are, and the success rates are not the point here.
1. `run_evaluation` with 1 and 2 worker processes on the same tasks and seeds (all five methods): evaluation
   episodes per minute, end to end (workers' start, videos and demos for adaptation, mp4s and reports included),
   the speed-up, the CPU time per episode, and with 2 workers the idle-core tail: how long before the end the
   first worker ran out of jobs.
2. Adaptation latency on one thread: from a video (an mp4 file, or frames in memory) to the first action of the
   adapted policy: read + fit + resample, one inner step of the learned loss, one policy step. Median of repeats.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import torch

import envs
from demos.export import write_mp4
from envs.tasks import FAMILY_CLASSES
from imitation.checkpoint import CheckpointInfo, ModelSpec, build_learner, save_checkpoint
from imitation.evaluate import EvalConfig, run_evaluation
from imitation.policy import PolicyConfig
from imitation.rollout import Rollout
from imitation.tracking import LoggerConfig


def make_checkpoint(out: Path, family: str, image_size: int) -> Path:
    spec = ModelSpec(policy=PolicyConfig(image_size=(image_size, image_size)))
    env = {"family": family, "image_size": image_size, "robot_visuals": "lowpoly", "renderer": "tiny"}
    info = CheckpointInfo(step=0, model=spec, env=env, episode_length=FAMILY_CLASSES[family].max_steps, dataset={}, train_config={})
    return save_checkpoint(out / "checkpoint" / "untrained.pt", build_learner(spec), info)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the pool's workers, once it has closed)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class WorkersLastBusy(threading.Thread):
    """Samples the CPU time of this process's pool workers (Linux /proc) to time when each of them last worked.

    The spread of those moments is how long one core sat idle at the end of a job: the CPU time cannot show it
    (an idle core costs none), and it is a matter of the job split, not of the neighbours' load.
    """

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.last: dict[int, float] = {}  # worker pid -> perf_counter of the last sample its CPU time grew
        self._cpu: dict[int, int] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            now = time.perf_counter()
            for pid, ticks in _workers_cpu_ticks().items():
                if ticks > self._cpu.get(pid, 0):
                    self._cpu[pid], self.last[pid] = ticks, now

    def spread(self) -> float:
        """Stop sampling; seconds between the first and the last worker's last work (0 with fewer than 2 workers)."""
        self._done.set()
        self.join()
        return max(self.last.values()) - min(self.last.values()) if len(self.last) > 1 else 0.0


def _workers_cpu_ticks() -> dict[int, int]:
    """User + system clock ticks of each live child that is a spawned multiprocessing worker (not its resource tracker)."""
    pids = {int(pid) for children in Path("/proc/self/task").glob("*/children") for pid in children.read_text().split()}
    ticks = {}
    for pid in pids:
        try:
            if b"spawn_main" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()  # fields from the 3rd (state) on
        except FileNotFoundError:  # it ended between the listing and the reads
            continue
        ticks[pid] = int(fields[11]) + int(fields[12])  # utime, stime: the 14th and 15th fields
    return ticks


def episodes_per_minute(checkpoint: Path, out: Path, tasks: int, trials: int, workers: int) -> tuple[float, int, float, float, float]:
    """(episodes per minute, episodes, wall seconds, CPU seconds, idle-core tail seconds) of one evaluation job.

    The CPU time tells contention apart from overhead on a shared machine: if the CPU time per episode is the
    same with 2 workers, a slower wall time means that the second core was busy with other work.
    """
    run = out / f"workers{workers}"
    shutil.rmtree(run, ignore_errors=True)
    cfg = EvalConfig(checkpoint=str(checkpoint), num_tasks=tasks, trials=trials, workers=workers, out=str(run), progress=False,
                     logger=LoggerConfig(kind="none"))
    cpu = cpu_seconds()
    last_busy = WorkersLastBusy()
    last_busy.start()
    report = run_evaluation(cfg)
    return report.episodes_per_minute, len(report.episodes), report.seconds, cpu_seconds() - cpu, last_busy.spread()


def adaptation_latency(checkpoint: Path, out: Path, family: str, repeats: int) -> dict[str, float]:
    """Median seconds from a video (file or frames) to the first action, on one thread."""
    torch.set_num_threads(1)
    model = Rollout.from_checkpoint(checkpoint)
    env = model.make_env("test")
    task = envs.sample_task(np.random.default_rng(0), family, "test")
    obs, _ = env.reset(seed=0, options={"task": task})
    frames, _ = env.unwrapped.render_human_video(seed=1)
    path = out / "video.mp4"
    write_mp4(path, frames, fps=10.0)
    env.close()

    def first_action(video: np.ndarray | Path) -> float:
        start = time.perf_counter()
        model.actor(model.adapt(video))(obs)
        return time.perf_counter() - start

    first_action(frames)  # warm-up: first calls allocate
    return {"from mp4 file": statistics.median(first_action(path) for _ in range(repeats)),
            "from frames in memory": statistics.median(first_action(frames) for _ in range(repeats)),
            "video frames": len(frames), "episode length": model.episode_length}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="reach", choices=envs.FAMILIES)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_eval"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = make_checkpoint(args.out, args.family, args.image_size)
    print(f"{args.family}, {args.image_size}x{args.image_size}, {args.tasks} tasks x {args.trials} trials x 5 methods; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    rates = {}
    for workers in (1, 2):
        rates[workers], n, seconds, cpu, tail = episodes_per_minute(checkpoint, args.out, args.tasks, args.trials, workers)
        print(f"workers={workers}: {n} episodes in {seconds:.1f} s = {rates[workers]:.1f} episodes/min; "
              f"{cpu:.1f} CPU s ({cpu / n:.2f} per episode, workers' start included)"
              + (f"; idle-core tail {tail:.1f} s" if workers > 1 else ""))
    print(f"speed-up with 2 workers: {rates[2] / rates[1]:.2f}x (load average now {os.getloadavg()[0]:.1f})")
    for name, value in adaptation_latency(checkpoint, args.out, args.family, args.repeats).items():
        print(f"adaptation latency, {name}: {value * 1000:.0f} ms" if isinstance(value, float) else f"{name}: {value}")


if __name__ == "__main__":
    main()
