"""oneshot-average: one checkpoint whose weights are the mean of several of a run's checkpoints.

    oneshot-average --out runs/reach-fine-linear/average-7500-10000.pt \\
        runs/reach-fine-linear/checkpoints/step-000{75,80,85,90,95}00.pt runs/reach-fine-linear/checkpoints/step-0010000.pt

Stochastic weight averaging after the fact (imitation.checkpoint.average_checkpoints): the result is a normal
checkpoint, evaluated with oneshot-eval like any other. Select the window on the val split.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from imitation.checkpoint import average_checkpoints


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oneshot-average", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint files of one run (at least 2)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the averaged checkpoint")
    args = parser.parse_args(argv)
    return write_new_checkpoint(parser, args.out, lambda: f"{average_checkpoints(args.checkpoints, args.out)}: "
                                                          f"the mean of {len(args.checkpoints)} checkpoints")


def write_new_checkpoint(parser: argparse.ArgumentParser, out: Path, write: Callable[[], str]) -> int:
    """Run `write` (it writes `out`, returns what to print) unless `out` exists; a missing or bad input exits 2, said."""
    if out.exists():
        parser.error(f"{out} exists: choose another --out (nothing is overwritten)")
    try:
        message = write()
    except (FileNotFoundError, ValueError) as e:
        print(f"{parser.prog}: {e}", file=sys.stderr)
        return 2
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
