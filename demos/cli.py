"""`oneshot-data`: look at a dataset folder.

    oneshot-data info PATH                     tasks per split, episodes, frames, size on disk, env config
    oneshot-data validate PATH                 check the shards against the manifest (exit 1 and name each problem)
    oneshot-data export PATH --task ID --out DIR   H.264 mp4s and a contact sheet of one task
    oneshot-data join PATH                     write manifest.json from complete shards (after a multirun)

Exit status: 0 fine, 1 validation found problems, 2 the dataset or the arguments cannot be used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from demos.export import export_task
from demos.format import DatasetError, read_manifest
from demos.manifest import join
from demos.validate import validate


def info(root: Path) -> str:
    """A human-readable summary of the manifest (reads no shard)."""
    m = read_manifest(root)
    env, cfg, version = m["env"], m["env"]["config"], m["code_version"]
    lines = [f"dataset {root} (format {m['format_version']}, code {version.get('git', '?')[:10]}"
             f"{' dirty' if version.get('dirty') else ''}, package {version['package']})",
             f"env: family={cfg['family']} image_size={cfg['image_size']} robot_visuals={cfg['robot_visuals']} "
             f"renderer={cfg['renderer']} (used: {env['renderer']}){' depth=true' if cfg.get('depth') else ''}, "
             f"{env['max_episode_steps']} steps per demo",
             f"success: {env['success_rule']}",
             f"{'split':<9}{'tasks':>7}{'skipped':>9}{'demos':>7}{'videos':>8}{'demo frames':>13}{'video frames':>14}"
             f"{'kept demos':>12}{'kept videos':>13}{'MB':>9}"]
    total = 0
    for split, e in sorted(m["splits"].items()):
        c = e["counts"]
        total += c["bytes"]
        lines.append(f"{split:<9}{c['tasks']:>7}{c['skipped_tasks']:>9}{c['demos']:>7}{c['videos']:>8}{c['demo_frames']:>13}"
                     f"{c['video_frames']:>14}{_percent(c['demo_kept_fraction']):>12}{_percent(c['video_kept_fraction']):>13}"
                     f"{c['bytes'] / 1e6:>9.1f}")
    shards = sum(len(e["shards"]) for e in m["splits"].values())
    lines.append(f"size on disk: {total / 1e6:.1f} MB in {shards} shards")
    return "\n".join(lines)


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="oneshot-data", description="Inspect, check and export oneshot-collect datasets.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="tasks per split, episodes, frames, size, env config").add_argument("path", type=Path)
    sub.add_parser("validate", help="check shards against the manifest").add_argument("path", type=Path)
    sub.add_parser("join", help="write manifest.json from complete shards").add_argument("path", type=Path)
    e = sub.add_parser("export", help="mp4 files and a contact sheet of one task")
    e.add_argument("path", type=Path)
    e.add_argument("--task", required=True, help="task id, or index within --split (default train)")
    e.add_argument("--split", default=None, help="the split to look in (default: any, by id)")
    e.add_argument("--out", type=Path, required=True, help="folder for the files")
    e.add_argument("--demo", type=int, default=0, help="which robot demo of the task")
    e.add_argument("--video", type=int, default=0, help="which human video of the task")
    e.add_argument("--fps", type=float, default=10.0, help="frames per second of the mp4 files (the control rate is 10)")
    e.add_argument("--scale", type=int, default=0, help="integer enlargement (0: about 256 px)")
    e.add_argument("--columns", type=int, default=10, help="cells per row of the contact sheet")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "info":
            print(info(args.path))
        elif args.command == "join":
            print(f"wrote {join(args.path)}")
        elif args.command == "export":
            for path in export_task(args.path, args.task, args.out, args.split, args.demo, args.video, args.fps, args.scale, args.columns):
                print(f"wrote {path}")
        else:
            problems = validate(args.path)
            for problem in problems:
                print(f"{args.path}/{problem}", file=sys.stderr)
            print(f"{args.path}: {'INVALID, ' + str(len(problems)) + ' problems' if problems else 'valid'}")
            return 1 if problems else 0
    except DatasetError as e:
        print(f"oneshot-data: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
