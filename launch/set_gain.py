"""oneshot-set-gain: a copy of a checkpoint that deploys with another action gain.

    oneshot-eval "++checkpoints={linear: runs/push/mean.pt}" action_gains='[1,1.5,2]' split=val out=runs/eval/gains
    oneshot-set-gain runs/push/mean.pt --gain 2 --out runs/push/mean-x2.pt     # the gain the val split chose

At deployment (oneshot-eval, oneshot-rollout, driven demos) the policy's action is multiplied by the checkpoint's
gain before the clip to [-1, 1] (imitation.checkpoint.set_action_gain says why). The weights are unchanged; the
gain is chosen on the val split, like any hyperparameter, before the test split is met.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imitation.checkpoint import set_action_gain
from launch.average import write_new_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oneshot-set-gain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="the checkpoint file to copy")
    parser.add_argument("--gain", type=float, required=True, help="the action gain to deploy with (> 0; 1 = as trained)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the copy (nothing is overwritten)")
    args = parser.parse_args(argv)

    def write() -> str:
        before = set_action_gain(args.checkpoint, args.gain, args.out)
        return f"{args.out}: {args.checkpoint} deployed with action gain {args.gain:g} (was {before:g})"
    return write_new_checkpoint(parser, args.out, write)


if __name__ == "__main__":
    sys.exit(main())
