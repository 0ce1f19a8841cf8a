"""Data-parallel meta-training: torchrun with 2 gloo processes on CPU makes the same update as 1 process.

The 2 processes each take 1 task of every 2-task meta-batch and average their meta-gradients; 1 process takes both
tasks. Adam hides the scale of a gradient in its first steps, so the logged gradient norms are compared too (a sum
instead of a mean would double them).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from imitation.checkpoint import load_checkpoint
from imitation.train import train
from test_train import TINY, config, parameters, read_metrics, train_data  # noqa: F401  (fixture)

BIN = Path(sys.executable).parent


def test_two_processes_make_the_same_update_as_one(train_data: Path, tmp_path: Path) -> None:  # noqa: F811
    steps = ("steps=3", "log_every=1", "val_every=0", "meta_batch=2")
    result = subprocess.run(
        [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "launch.train", f"data={train_data}",
         f"out={tmp_path}", "run_name=ddp", "loader.workers=0", *TINY, *steps],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # both ranks used one folder; rank 1 wrote nothing else
    single = train(config(train_data, tmp_path / "single", *steps))

    two, _, _ = load_checkpoint(tmp_path / "ddp" / "checkpoints")
    one, _, _ = load_checkpoint(single.checkpoint)
    for key, value in parameters(one).items():
        torch.testing.assert_close(parameters(two)[key], value, rtol=1e-5, atol=1e-6, msg=key)
    for a, b in zip(read_metrics(tmp_path / "ddp"), read_metrics(tmp_path / "single"), strict=True):
        for key in ("train/outer_loss", "train/inner_loss_pre", "train/grad_norm", "train/grad_norm_inner_loss"):
            assert abs(a[key] - b[key]) <= 1e-5 * abs(b[key]), (key, a[key], b[key])
