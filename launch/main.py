"""`make run`: watch a video of an unseen task, adapt, act: the shipped checkpoints evaluated on held-out tasks.

    python -m launch.main                          # the shipped reach checkpoints, 10 test tasks x 2 trials (minutes)
    python -m launch.main --eval-tasks 50          # the README's table size
    python -m launch.main --family push            # the shipped push (or pick_place) checkpoints instead
    python -m launch.main --pipeline               # collect, export, train and evaluate from scratch (~10-12 minutes)

Default: `oneshot-eval` on test-split tasks (object identities never seen in training; evaluation seeds disjoint
from every collection seed) with the checkpoints in checkpoints/ (see checkpoints/README.md for the commands that
made them): per task one human-proxy video is rendered, each policy adapts to it (DAML: one gradient step on the
learned loss; black box: its video encoder) and acts in new arrangements, beside the no-adaptation, robot-demo,
random and scripted-expert references. It prints the table and where the side-by-side videos are.

--pipeline runs every stage through the command a user would type:
1. oneshot-collect: a small dataset (train and val splits: robot demos and human-proxy videos)
2. oneshot-data export: an mp4 and a contact sheet of one task (the robot demo beside the human video)
3. oneshot-train: a short meta-training run (video-only inner update with the learned loss, BC outer loss)
4. oneshot-eval: held-out test-split tasks, one video each, daml / none / robot_demo / random / expert
At that size the policy is barely trained: the table shows the pipeline working end to end, not a result.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"
# family -> {table name: file} (checkpoints/README.md says how each was made). Reach: the headline (the learned linear
# loss with a query anchor, on demos with DART noise), then the ablation at one recipe (DAML's temporal loss, the linear
# loss, the black box). Push: the two learned losses and the black box. Pick and place: the headline (DAML), then the
# ablation's three files, each from scratch at one budget.
SHIPPED_MODELS = {
    "reach": {"anchor": "reach-anchor.pt", "daml": "reach-daml.pt", "linear": "reach-linear.pt", "blackbox": "reach-blackbox.pt"},
    "push": {"linear": "push-linear.pt", "daml": "push-daml.pt", "blackbox": "push-blackbox.pt"},
    "pick_place": {"daml": "pick_place-daml.pt", "daml_gpu": "pick_place-daml-gpu.pt", "linear": "pick_place-linear.pt",
                   "blackbox": "pick_place-blackbox.pt"},
}
# family -> {table name: members}: push's headline acts with the mean of its two learned losses' actions
SHIPPED_ENSEMBLES = {"push": {"ensemble": ["linear", "daml"]}}


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
    parser.add_argument("--pipeline", action="store_true", help="collect, train and evaluate from scratch instead")
    parser.add_argument("--family", default="reach", choices=list(SHIPPED_MODELS),
                        help="task family: of the shipped checkpoints evaluated, or of --pipeline (default reach)")
    parser.add_argument("--out", default="outputs/make-run", help="folder for everything written (default outputs/make-run)")
    parser.add_argument("--train-tasks", type=int, default=60, help="--pipeline: training tasks to collect (default 60)")
    parser.add_argument("--train-steps", type=int, default=1500, help="--pipeline: meta-training steps (default 1500)")
    parser.add_argument("--eval-tasks", type=int, default=10, help="held-out test tasks (default 10)")
    parser.add_argument("--trials", type=int, default=2, help="deployments per test task and method (default 2)")
    return parser.parse_args()


def evaluate(checkpoints: dict[str, Path], evaluation: Path, args: argparse.Namespace,
             ensembles: dict[str, list[str]] | None = None) -> None:
    listed = ", ".join(f"{name}: '{path}'" for name, path in checkpoints.items())
    grouped = ", ".join(f"{name}: [{', '.join(members)}]" for name, members in (ensembles or {}).items())
    stage("evaluate on held-out tasks", "launch.evaluate", f"++checkpoints={{{listed}}}", f"++ensembles={{{grouped}}}",
          f"num_tasks={args.eval_tasks}", f"trials={args.trials}", f"out={evaluation}", "logger=none", "videos=2")
    print(f"\n{(evaluation / 'summary.md').read_text()}")
    print(f"side-by-side videos (watched | robot acting): {evaluation / 'videos'}")


def shipped(args: argparse.Namespace) -> None:
    checkpoints = {name: SHIPPED / file for name, file in SHIPPED_MODELS[args.family].items()}
    missing = [str(path) for path in checkpoints.values() if not path.exists()]
    if missing:
        raise SystemExit(f"make run: shipped checkpoint(s) missing: {', '.join(missing)}; run with --pipeline to train one")
    evaluation = Path(args.out) / "eval" / f"shipped-{args.family}-{time.strftime('%Y%m%d-%H%M%S')}"
    evaluate(checkpoints, evaluation, args, SHIPPED_ENSEMBLES.get(args.family))


def pipeline(args: argparse.Namespace) -> None:
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
    evaluate({"daml": out / "runs" / run_name / "checkpoints" / "last.pt"}, out / "eval" / run_name, args)
    print(f"the robot demo beside the human video of one training task: {out / 'export'}")


def main() -> None:
    args = parse_args()
    if args.pipeline:
        pipeline(args)
    else:
        shipped(args)


if __name__ == "__main__":
    main()
