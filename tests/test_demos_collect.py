"""oneshot-collect through the real commands: a tiny reach dataset (32 px, 3 tasks, 1 demo + 1 video each).

The reference dataset is made once per test process with 2 workers; resuming a killed run (1 worker) and the
Hydra multirun path (2 jobs) must reproduce its shards byte for byte.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

BIN = Path(sys.executable).parent
TINY = ["env=reach", "env.image_size=32", "num_tasks=3", "tasks_per_shard=1", "demos_per_task=1", "videos_per_task=1",
        "progress=false"]


def collect(out: Path, *overrides: str, command: tuple[str, ...] = (sys.executable, "-m", "launch.collect"),
            check: bool = True) -> subprocess.CompletedProcess:
    """Run a collect command (a "-m" among the overrides goes first, where Hydra's argument parser wants it)."""
    flags = [o for o in overrides if o.startswith("-")]
    overrides = tuple(o for o in overrides if not o.startswith("-"))
    result = subprocess.run([*command, *flags, *TINY, f"out={out}", *overrides], capture_output=True, text=True, cwd=out.parent, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def digests(root: Path) -> dict[str, str]:
    manifest = json.loads((root / "manifest.json").read_text())
    return {s["file"]: s["sha256"] for s in manifest["splits"]["train"]["shards"]}


def arrays(root: Path) -> dict[str, np.ndarray]:
    out = {}
    for shard in sorted((root / "train").glob("*.h5")):
        with h5py.File(shard, "r") as f:
            f.visititems(lambda name, obj: out.__setitem__(f"{shard.name}/{name}", obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "reach"
    collect(out, "workers=2", command=(str(BIN / "oneshot-collect"),))
    return out


def test_collect_writes_a_self_describing_dataset(reference: Path) -> None:
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["env"]["config"]["family"] == "reach"
    assert manifest["env"]["renderer"] == "tiny" and manifest["env"]["image_shape"] == [32, 32, 3]
    assert "git" in manifest["code_version"] or manifest["code_version"]["package"]
    train = manifest["splits"]["train"]
    assert train["counts"]["tasks"] == 3 and train["counts"]["demos"] == 3 and train["counts"]["videos"] == 3
    assert len({t["id"] for t in train["tasks"]}) == 3
    seeds = [e["seed"] for t in train["tasks"] for e in t["demos"] + t["videos"]]
    assert len(set(seeds)) == len(seeds)
    assert sorted(p.name for p in (reference / "train").iterdir()) == ["plan.json", *(f"shard-0000{k}-of-00003.h5" for k in range(3))]


def test_resume_after_kill_gives_identical_bytes(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "reach"
    argv = [sys.executable, "-m", "launch.collect", *TINY, "workers=1", f"out={out}"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not list(out.glob("train/*.h5")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = sorted(p.name for p in out.glob("train/*.h5"))
    assert 1 <= len(kept) < 3 and not (out / "manifest.json").exists(), kept
    stale = out / "train" / "shard-00002-of-00003.h5.tmp-999999"
    stale.write_bytes(b"half a shard")  # what a kill while writing leaves behind
    result = collect(out, "workers=1")
    assert f"{len(kept)} shards were already complete" in result.stdout
    assert not stale.exists()
    assert digests(out) == digests(reference)
    ref, got = arrays(reference), arrays(out)
    assert ref.keys() == got.keys() and all(np.array_equal(ref[k], got[k]) for k in ref)


def test_multirun_shards_join_into_one_dataset(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "reach"
    collect(out, "-m", "shard=0,1", "num_shards=2", "workers=1")
    assert digests(out) == digests(reference)
    assert len(list((out / "logs" / "train").glob("multirun-*/shard*/.hydra/config.yaml"))) == 2
    assert subprocess.run([BIN / "oneshot-data", "validate", out], capture_output=True).returncode == 0


def test_rerun_of_a_complete_dataset_changes_nothing(reference: Path, tmp_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in reference.glob("train/*.h5")}
    result = collect(reference, "workers=1")
    assert "3 shards were already complete" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in reference.glob("train/*.h5")} == before


@pytest.mark.parametrize("overrides, message", [
    (["env=push"], "another environment"),
    (["num_tasks=4"], "other settings"),
    (["env.image_size=64"], "another environment"),
])
def test_out_holding_another_dataset_is_refused(reference: Path, overrides: list[str], message: str) -> None:
    before = digests(reference)
    result = collect(reference, *overrides, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert digests(reference) == before and len(list(reference.glob("train/*.h5"))) == 3


def test_out_with_foreign_files_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    result = collect(out, check=False)
    assert result.returncode == 2 and "not part of a dataset" in result.stderr
    assert (out / "thesis.tex").read_text() == "precious"


def test_bad_settings_are_refused_before_any_work(tmp_path: Path) -> None:
    result = collect(tmp_path / "x", "shard=2", "num_shards=2", check=False)
    assert result.returncode == 2 and "shard must be in [0, num_shards=2)" in result.stderr
    result = collect(tmp_path / "y", "split=nope", check=False)
    assert result.returncode == 2 and "split must be one of" in result.stderr


def test_slurm_launcher_config_composes() -> None:
    from hydra import compose, initialize_config_dir

    import launch.collect  # noqa: F401  (registers the structured configs)

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("collect", overrides=["hydra/launcher=collect_slurm", "env=pick_place", "out=x"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.cpus_per_task == 8
    assert cfg.env.family == "pick_place" and cfg.env.image_size == 64
