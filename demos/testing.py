"""Test helpers and fixtures (import the fixtures `reference` and `scratch` into a test module to use them).

One tiny reference dataset per pytest run, made through the real `oneshot-collect` command: every test module
reads the same one, built once under a file lock even when pytest-xdist runs the modules in several processes
(collection is the slow part of the tests).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

BIN = Path(sys.executable).parent
# reach at 32 px: 2 tasks, 2 demos + 1 video each, one task per shard (2 shards)
TINY = ("env=reach", "env.image_size=32", "num_tasks=2", "tasks_per_shard=1", "demos_per_task=2", "videos_per_task=1",
        "progress=false")


def run_collect(out: Path, *overrides: str, command: tuple[str, ...] = (sys.executable, "-m", "launch.collect"),
                check: bool = True) -> subprocess.CompletedProcess:
    """Run a collect command on the tiny settings; flags among the overrides ("-m") go first, where Hydra wants them."""
    flags = [o for o in overrides if o.startswith("-")]
    rest = [o for o in overrides if not o.startswith("-")]
    out.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([*command, *flags, *TINY, f"out={out}", *rest], capture_output=True, text=True, cwd=out.parent, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"collect failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result


def run_data(*args: object) -> subprocess.CompletedProcess:
    """Run the `oneshot-data` console script."""
    return subprocess.run([str(BIN / "oneshot-data"), *map(str, args)], capture_output=True, text=True, timeout=300)


def reference_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference dataset of this pytest run, made on first use with `oneshot-collect` and 2 worker processes.

    It lives in the run's base temporary folder, which pytest-xdist's worker processes share (their own folders are
    below it). Tests must not modify it: copy it first.
    """
    base = tmp_path_factory.getbasetemp()
    run_dir = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out = run_dir / "demos-reference" / "reach"
    with FileLock(str(run_dir / "demos-reference.lock")):
        if not (out / "manifest.json").exists():
            run_collect(out, "workers=2", command=(str(BIN / "oneshot-collect"),))
    return out


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference dataset: reach, 32 px, 2 tasks with 2 demos and 1 video each, one task per shard. Read only."""
    return reference_dataset(tmp_path_factory)


@pytest.fixture
def scratch(reference: Path, tmp_path: Path) -> Path:
    """A copy of the reference dataset that a test may damage."""
    return Path(shutil.copytree(reference, tmp_path / "copy"))
