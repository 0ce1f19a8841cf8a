"""Check a dataset against its manifest: digests, sizes, shapes, dtypes, counts, value ranges, NaNs, no leaks.

Every problem names the file and the field; nothing stops at the first one, so one run lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from demos.format import LOGS, MANIFEST, PLAN, DatasetError, read_manifest, sha256_file
from demos.shards import META, VIDEO_FIELDS, demo_fields, open_shard, read_meta


@dataclass(frozen=True)
class Problem:
    file: str  # relative to the dataset folder
    field: str  # an HDF5 path, a manifest field, or "file"
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


def validate(root: Path) -> list[Problem]:
    """All the problems of the dataset at `root` (empty when it is sound). A bad manifest raises DatasetError."""
    root = Path(root)
    manifest = read_manifest(root)
    env = manifest["env"]
    depth = bool(env["config"].get("depth", False))
    fields = {"demos": demo_fields(manifest["format_version"], depth), "videos": VIDEO_FIELDS}
    problems = _strays(root, manifest)
    for split, entry in manifest["splits"].items():
        by_shard: dict[str, list[dict]] = {}
        for t in entry["tasks"]:
            by_shard.setdefault(t["shard"], []).append(t)
        for shard in entry["shards"]:
            problems += _check_shard(root, shard, by_shard.get(shard["file"], []), env, fields)
        problems += _check_counts(split, entry)
    return problems


def _strays(root: Path, manifest: dict) -> list[Problem]:
    """Files in split folders that the manifest does not list (a leftover temporary, a foreign shard)."""
    listed = {s["file"] for e in manifest["splits"].values() for s in e["shards"]}
    return [Problem(p.relative_to(root).as_posix(), "file", "not listed in the manifest")
            for p in sorted(root.glob("*/*")) if p.parent.name != LOGS and p.name != PLAN
            and p.relative_to(root).as_posix() not in listed and (p.parent / PLAN).exists()]


def _check_shard(root: Path, shard: dict, tasks: list[dict], env: dict, fields: dict[str, tuple[str, ...]]) -> list[Problem]:
    name, path = shard["file"], root / shard["file"]
    if not path.exists():
        return [Problem(name, "file", "missing")]
    problems = []
    size = path.stat().st_size
    if size != shard["bytes"]:
        problems.append(Problem(name, "file", f"{size} bytes, the manifest says {shard['bytes']} (truncated or overwritten)"))
    elif sha256_file(path) != shard["sha256"]:
        problems.append(Problem(name, "sha256", "digest differs from the manifest (the file was modified or damaged)"))
    try:
        with open_shard(path) as f:
            problems += _check_contents(f, name, tasks, env, fields)
    except DatasetError as e:
        problems.append(Problem(name, "file", str(e)))
    return problems


def _check_contents(f: h5py.File, name: str, tasks: list[dict], env: dict, fields: dict[str, tuple[str, ...]]) -> list[Problem]:
    problems: list[Problem] = []
    meta_ids = {t["id"] for t in read_meta(f)["tasks"] if not t["skipped"]}
    stored = set(f["tasks"]) if "tasks" in f else set()
    listed = {t["id"] for t in tasks}
    for extra in sorted((stored | meta_ids) - listed):
        problems.append(Problem(name, f"tasks/{extra}", "stored in the shard but not listed in the manifest"))
    if set(f) - {"tasks", META}:
        problems.append(Problem(name, "/", f"unexpected top-level entries {sorted(set(f) - {'tasks', META})}"))
    for t in tasks:
        if t["id"] not in stored:
            problems.append(Problem(name, f"tasks/{t['id']}", "missing"))
            continue
        group = f[f"tasks/{t['id']}"]
        if set(group) - {"demos", "videos"}:
            problems.append(Problem(name, group.name, f"unexpected entries {sorted(set(group) - {'demos', 'videos'})}"))
        for kind in ("demos", "videos"):
            episodes = group.get(kind, {})
            if len(episodes) != len(t[kind]):
                problems.append(Problem(name, f"{group.name}/{kind}", f"{len(episodes)} episodes, the manifest says {len(t[kind])}"))
            for k, record in enumerate(t[kind]):
                if str(k) in episodes:
                    problems += _check_episode(name, episodes[str(k)], fields[kind], record["length"], env)
    return problems


def _check_episode(name: str, group: h5py.Group, fields: tuple[str, ...], length: int, env: dict) -> list[Problem]:
    """Exactly the expected fields (so no actions or states in a video), with the right shapes, dtypes and values."""
    if set(group) != set(fields):
        return [Problem(name, group.name, f"fields {sorted(group)}, expected exactly {sorted(fields)}")]
    h, w, c = env["image_shape"]
    expected = {"images": ((length, h, w, c), np.uint8), "frames": ((length, h, w, c), np.uint8),
                "states": ((length, env["state_dim"]), np.float32), "actions": ((length, env["action_dim"]), np.float32),
                "target_positions": ((length, 3), np.float32), "depth": ((length, h, w), np.uint8)}
    problems = []
    if "actions" in fields and length != env["max_episode_steps"]:
        problems.append(Problem(name, group.name, f"demo length {length}, episodes have {env['max_episode_steps']} steps"))
    for field in fields:
        ds, where = group[field], f"{group.name}/{field}"
        shape, dtype = expected[field]
        if ds.shape != shape or ds.dtype != dtype:
            problems.append(Problem(name, where, f"{ds.dtype} {ds.shape}, expected {np.dtype(dtype)} {shape}"))
            continue
        try:
            data = ds[()]
        except OSError as e:
            problems.append(Problem(name, where, f"unreadable, the stored data is damaged ({e})"))
            continue
        problems += [Problem(name, where, m) for m in _value_problems(field, data)]
    return problems


def _value_problems(field: str, data: np.ndarray) -> list[str]:
    if field in ("images", "frames"):
        return ["every pixel has the same value (a blank render)"] if data.min() == data.max() else []
    if field == "depth":
        return ["depth level 0, which the env never records (it means no depth)"] if data.min() == 0 else []
    if not np.all(np.isfinite(data)):
        return ["NaN or infinite values"]
    if field == "actions" and np.abs(data).max() > 1.0:
        return [f"actions outside [-1, 1] (largest magnitude {np.abs(data).max():.3g})"]
    return []


def _check_counts(split: str, entry: dict) -> list[Problem]:
    counts, tasks, plan = entry["counts"], entry["tasks"], entry["plan"]
    actual = {"tasks": len(tasks), "demos": sum(len(t["demos"]) for t in tasks), "videos": sum(len(t["videos"]) for t in tasks)}
    problems = [Problem(MANIFEST, f"splits.{split}.counts.{k}", f"{counts.get(k)} but the task list has {v}")
                for k, v in actual.items() if counts.get(k) != v]
    demos = plan["demos_per_task"] + plan.get("driven_demos_per_task", 0)  # the driven ones follow the expert's
    for t in tasks:
        if len(t["demos"]) != demos or len(t["videos"]) != plan["videos_per_task"]:
            problems.append(Problem(MANIFEST, f"splits.{split}.tasks[{t['index']}]",
                                    f"{len(t['demos'])} demos and {len(t['videos'])} videos, the plan asks "
                                    f"{demos} and {plan['videos_per_task']}"))
    return problems
