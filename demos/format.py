"""The dataset folder: names, the manifest, atomic writes, and the errors a bad dataset raises.

A dataset is a folder:

    manifest.json            everything needed to use the data (written last, by the join step)
    <split>/plan.json        the settings a split is collected with (written first; resumed jobs must agree)
    <split>/shard-KKKKK-of-NNNNN.h5   HDF5 shards of consecutive tasks (complete once they have this name)
    logs/                    Hydra's per-run logs and resolved configs

Inside a shard (h5py, one group per task, one chunked dataset per episode field):

    tasks/<task_id>/demos/<k>/images  uint8 (T, H, W, 3)   observation frames before each action
    tasks/<task_id>/demos/<k>/states  float32 (T, 11)
    tasks/<task_id>/demos/<k>/actions float32 (T, 4)
    tasks/<task_id>/demos/<k>/target_positions float32 (T, 3)  the target object's centre (x, y, z) at each frame
                                                   (format 2 on: a training label, never a policy input)
    tasks/<task_id>/videos/<k>/frames uint8 (T', H, W, 3)  human-proxy video: no actions, no states
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

FORMAT_NAME = "oneshot-demos"
FORMAT_VERSION = 2
OLDEST_READABLE_VERSION = 1  # format 1 has no target positions: everything but that label reads
MANIFEST = "manifest.json"
PLAN = "plan.json"
LOGS = "logs"
SHARD_SUFFIX = ".h5"


class DatasetError(Exception):
    """A dataset that cannot be used as asked; the message says which file and what to do."""


class ManifestError(DatasetError):
    """manifest.json is missing, unreadable or incomplete."""


class FormatVersionError(DatasetError):
    """The dataset was written in another format version than this code reads."""


class DatasetMismatchError(DatasetError):
    """The dataset is not the one asked for (another env, config, image size), or a folder holds another dataset."""


class ShardError(DatasetError):
    """A shard is missing, truncated or unreadable."""


def shard_name(split: str, index: int, count: int) -> str:
    """The path of a shard relative to the dataset folder."""
    return f"{split}/shard-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"


def num_shard_files(num_tasks: int, tasks_per_shard: int) -> int:
    return -(-num_tasks // tasks_per_shard)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON under a temporary name and rename it: readers see the old file or the new one, never half."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path, what: str) -> dict:
    """A JSON object from a file, with an error that names the file when it is not one."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ManifestError(f"{path}: no {what} here") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: corrupt {what} ({e}); restore it or collect the dataset again") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: corrupt {what} (a JSON object was expected, found {type(data).__name__})")
    return data


def check_format(data: dict, path: Path) -> None:
    """Refuse a manifest or plan of another format, or of a format version this code does not read."""
    if data.get("format") != FORMAT_NAME or not isinstance(data.get("format_version"), int):
        raise ManifestError(f"{path}: not a {FORMAT_NAME} manifest (format/format_version fields missing or wrong)")
    version = data["format_version"]
    if version > FORMAT_VERSION:
        raise FormatVersionError(f"{path}: dataset format version {version} is newer than this code reads ({FORMAT_VERSION}); "
                                 "update the code (git pull / pip install -U) to read it")
    if version < OLDEST_READABLE_VERSION:
        raise FormatVersionError(f"{path}: dataset format version {version} is older than this code reads ({OLDEST_READABLE_VERSION}); "
                                 "collect it again with this code")


MANIFEST_KEYS = ("env", "splits", "code_version")


def read_manifest(root: Path) -> dict:
    """The manifest of a finished dataset, checked for format, version and the top-level fields."""
    path = Path(root) / MANIFEST
    if not path.exists():
        hint = ("its collection has not finished: run the same oneshot-collect command again, or `oneshot-data join`"
                if any(Path(root).glob(f"*/{PLAN}")) else "not a dataset folder")
        raise ManifestError(f"{path}: no manifest ({hint})")
    manifest = read_json(path, "manifest")
    check_format(manifest, path)
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ManifestError(f"{path}: corrupt manifest (missing fields: {', '.join(missing)})")
    return manifest


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """The package version and, in a git checkout, the revision (and whether the tree had uncommitted changes)."""
    version: dict[str, Any] = {"package": _package_version()}
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if rev.returncode == 0:
            status = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10)
            version.update(git=rev.stdout.strip(), dirty=bool(status.stdout.strip()))
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def _package_version() -> str:
    try:
        return metadata.version("oneshot-imitation")
    except metadata.PackageNotFoundError:
        return "unknown"
