"""`make run`: the whole pipeline at laptop size, each stage through the command a user would type.

    python -m launch.main                      # about 10-12 minutes on a 2-core CPU
    python -m launch.main --family push --out outputs/make-run --train-steps 600

1. oneshot-collect: a small reach dataset (train and val splits: robot demos and human-proxy videos)
2. oneshot-data export: an mp4 and a contact sheet of one task (the robot demo beside the human video)
3. oneshot-train: a short meta-training run (video-only inner update with the learned loss, BC outer loss)
4. oneshot-eval: held-out test-split tasks, one video each, daml / none / robot_demo / random / expert

At this size the policy is barely trained: the table shows the pipeline working end to end, not the method's
success rate (see the README's results section for what longer training reaches).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def stage(title: str, module: str, *overrides: str) -> None:
    """Run one entry point as its own process (as a user would) and stop the pipeline if it fails."""
    print(f"\n=== {title}\n$ python -m {module} {' '.join(overrides)}", flush=True)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", module, *overrides])
    if result.returncode != 0:
        raise SystemExit(f"make run: stage '{title}' failed (exit {result.returncode})")
    print(f"=== {title}: done in {time.perf_counter() - started:.0f} s", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="reach", choices=["reach", "push", "pick_place"], help="task family (default reach)")
    parser.add_argument("--out", default="outputs/make-run", help="folder for the dataset and the runs (default outputs/make-run)")
    parser.add_argument("--train-tasks", type=int, default=60, help="training tasks to collect (default 60)")
    parser.add_argument("--train-steps", type=int, default=1500, help="meta-training steps (default 1500)")
    parser.add_argument("--eval-tasks", type=int, default=6, help="held-out test tasks (default 6)")
    parser.add_argument("--trials", type=int, default=2, help="deployments per test task and method (default 2)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    data = out / "data" / args.family
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for split, tasks, episodes in (("train", args.train_tasks, 2), ("val", 6, 1)):
        stage(f"collect {split}", "launch.collect", f"env={args.family}", f"split={split}", f"num_tasks={tasks}",
              f"demos_per_task={episodes}", f"videos_per_task={episodes}", f"out={data}", "tasks_per_shard=6")
    stage("export one task", "demos.cli", "export", str(data), "--split", "train", "--task", "0", "--out", str(out / "export"))
    run_name = f"{args.family}-{stamp}"
    stage("meta-train", "launch.train", f"data={data}", f"out={out / 'runs'}", f"run_name={run_name}",
          f"steps={args.train_steps}", "loader.frame_stride=4", "threads=1", "val_every=250", "ckpt_every=250", "logger=none")
    evaluation = out / "eval" / run_name
    stage("evaluate on held-out tasks", "launch.evaluate", f"checkpoint={out / 'runs' / run_name / 'checkpoints' / 'last.pt'}",
          f"num_tasks={args.eval_tasks}", f"trials={args.trials}", f"out={evaluation}", "logger=none", "videos=2")
    print(f"\n{(evaluation / 'summary.md').read_text()}")
    print(f"side-by-side videos (watched | robot acting): {evaluation / 'videos'}")
    print(f"the robot demo beside the human video of one training task: {out / 'export'}")


if __name__ == "__main__":
    main()
