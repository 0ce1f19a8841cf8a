"""The dataset's identity: plans written before collecting, and the manifest joined from complete shards.

A split's `plan.json` is written before its first shard, so a later run (a resume, another Hydra multirun job,
a mistake) is compared with it before anything is written: a different env or config is refused, never mixed in.
The manifest is rebuilt from the plans and the shards' own metadata whenever a job finishes; a split enters it
once all its shards exist. Rebuilding is idempotent, so concurrent jobs may race to write it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import envs.core
from demos.config import CollectConfig, plan_of
from demos.format import (FORMAT_NAME, FORMAT_VERSION, LOGS, MANIFEST, PLAN, DatasetMismatchError, ManifestError, ShardError, check_format,
                          code_version, num_shard_files, read_json, read_manifest, sha256_file, shard_name, write_json_atomic)
from demos.seeds import KINDS
from demos.shards import open_shard, read_meta

SEED_RULE = ("seed = base_seed << 45 | split << 42 | task << 22 | kind << 20 | attempt; split = index in "
             f"{list(envs.SPLITS)}, kind = index in {list(KINDS)}; a failed episode retries with attempt + 1")


def _plan_document(cfg: CollectConfig) -> dict:
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "plan": plan_of(cfg)}


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}: {x!r} there, {y!r} asked")
    return out


def read_plan(path: Path) -> dict:
    doc = read_json(path, "plan")
    check_format(doc, path)
    if not isinstance(doc.get("plan"), dict):
        raise ManifestError(f"{path}: corrupt plan (no 'plan' object)")
    return doc["plan"]


def prepare_output(root: Path, cfg: CollectConfig) -> None:
    """Make `root` ready for this split, or refuse when it holds anything else (nothing existing is touched)."""
    if root.exists() and not root.is_dir():
        raise DatasetMismatchError(f"out={root} is a file, not a dataset folder")
    root.mkdir(parents=True, exist_ok=True)
    allowed = {MANIFEST, LOGS, *envs.SPLITS}
    strangers = sorted(p.name for p in root.iterdir() if p.name not in allowed and not p.name.startswith(f"{MANIFEST}.tmp-"))
    if strangers:
        raise DatasetMismatchError(f"out={root} holds files that are not part of a dataset ({', '.join(strangers[:5])}); "
                                   "choose an empty or new folder")
    plan = plan_of(cfg)
    for document in [root / MANIFEST, *root.glob(f"*/{PLAN}")]:
        if document.exists():
            _refuse_other_format(document)
    if (root / MANIFEST).exists():
        config = read_manifest(root)["env"].get("config")
        if not isinstance(config, dict):
            raise ManifestError(f"{root / MANIFEST}: corrupt manifest (no env.config)")
        _refuse_other_env(root / MANIFEST, config, plan["env"])
    for other in root.glob(f"*/{PLAN}"):
        if other.parent.name != cfg.split:
            _refuse_other_env(other, read_plan(other)["env"], plan["env"])
    split_dir = root / cfg.split
    if (split_dir / PLAN).exists():
        diff = _differences(read_plan(split_dir / PLAN), plan)
        if diff:
            raise DatasetMismatchError(f"{split_dir / PLAN}: this folder's {cfg.split} split was collected with other settings "
                                       f"({'; '.join(diff)}); use another out folder (existing data is never overwritten)")
        return
    if any(split_dir.glob("*.h5")):
        raise DatasetMismatchError(f"{split_dir}: shards without a plan.json; not made by this tool, or damaged")
    split_dir.mkdir(exist_ok=True)
    write_json_atomic(split_dir / PLAN, _plan_document(cfg))


def _refuse_other_format(path: Path) -> None:
    """One dataset holds one format: a split of an older format is never extended or joined by this code."""
    document = read_json(path, "plan" if path.name == PLAN else "manifest")
    check_format(document, path)  # a newer or unknown format is refused with its own message
    version = document["format_version"]
    if version != FORMAT_VERSION:
        raise DatasetMismatchError(f"{path}: written in dataset format {version}, this code writes format {FORMAT_VERSION}; "
                                   "use another out folder (existing data is never overwritten)")


def _refuse_other_env(path: Path, there: dict, asked: dict) -> None:
    diff = _differences(there, asked)
    if diff:
        raise DatasetMismatchError(f"out holds a dataset of another environment ({path}: {'; '.join(diff)}); "
                                   "use another out folder (existing data is never overwritten)")


# ----- join ------------------------------------------------------------------------------------------------
def split_entry(root: Path, plan: dict) -> tuple[dict, list[dict]]:
    """The manifest entry of a split whose shards all exist (ShardError otherwise), and the shards' env info."""
    n = num_shard_files(plan["num_tasks"], plan["tasks_per_shard"])
    files = [shard_name(plan["split"], k, n) for k in range(n)]
    missing = [f for f in files if not (root / f).exists()]
    if missing:
        raise ShardError(f"{root}: split {plan['split']!r} is incomplete, {len(missing)} of {n} shards missing "
                         f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); run the collect command again")
    shards, tasks, skipped, env_infos = [], [], [], []
    for name in files:
        with open_shard(root / name) as f:
            meta = read_meta(f)
        env_infos.append(meta["env_info"])
        ids = []
        for t in meta["tasks"]:
            (skipped if t["skipped"] else tasks).append({**t, "shard": name})
            ids += [] if t["skipped"] else [t["id"]]
        shards.append({"file": name, "sha256": sha256_file(root / name), "bytes": (root / name).stat().st_size,
                       "tasks": ids, "code_version": meta["code_version"], "renderer": meta["env_info"]["renderer"]})
    return {"plan": plan, "counts": _counts(tasks, skipped, shards), "shards": shards, "tasks": tasks, "skipped_tasks": skipped}, env_infos


def _counts(tasks: list[dict], skipped: list[dict], shards: list[dict]) -> dict:
    counts = {"tasks": len(tasks), "skipped_tasks": len(skipped), "bytes": sum(s["bytes"] for s in shards)}
    for kind in ("demo", "video"):
        kept = sum(len(t[f"{kind}s"]) for t in tasks)
        attempts = kept + sum(t["failures"][kind] for t in tasks + skipped)
        counts.update({f"{kind}s": kept, f"{kind}_frames": sum(e["length"] for t in tasks for e in t[f"{kind}s"]),
                       f"{kind}_attempts": attempts, f"{kind}_kept_fraction": round(kept / attempts, 4) if attempts else None})
    return counts


def build_manifest(root: Path) -> dict:
    """The manifest over every split whose shards are all present (ShardError when no split is complete)."""
    splits, env_config, infos, errors = {}, None, [], []
    for plan_path in sorted(root.glob(f"*/{PLAN}")):
        plan = read_plan(plan_path)
        try:
            entry, env_infos = split_entry(root, plan)
        except ShardError as e:
            errors.append(str(e))
            continue
        splits[plan["split"]] = entry
        env_config, infos = plan["env"], infos + env_infos
    if not splits:
        raise ShardError("; ".join(errors) or f"{root}: no split has been collected here")
    renderers = sorted({i["renderer"] for i in infos})
    if len(renderers) > 1:
        raise DatasetMismatchError(f"{root}: shards were rendered with different renderers ({', '.join(renderers)}); "
                                   "recollect the odd ones with the same renderer")
    env = {"config": env_config, "renderer": renderers[0], "max_episode_steps": infos[0]["max_episode_steps"],
           "success_rule": infos[0]["success_rule"], "robot_camera": asdict(envs.core.ROBOT_CAMERA),
           "human_camera": "random per video (see each video's camera_eye)", "state_dim": envs.STATE_DIM,
           "action_dim": envs.ACTION_DIM, "image_shape": [env_config["image_size"], env_config["image_size"], 3]}
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "env": env, "seed_rule": SEED_RULE,
            "code_version": code_version(), "splits": splits}


def update_manifest(root: Path) -> Path | None:
    """Rebuild and write manifest.json when every shard of every planned split exists; None when some are missing."""
    try:
        manifest = build_manifest(root)
    except ShardError:
        return None
    if set(manifest["splits"]) != {p.parent.name for p in root.glob(f"*/{PLAN}")}:
        return None
    write_json_atomic(root / MANIFEST, manifest)
    return root / MANIFEST


def join(root: Path) -> Path:
    """Write manifest.json for every complete split; ShardError naming the missing shards when none is complete."""
    manifest = build_manifest(root)
    write_json_atomic(root / MANIFEST, manifest)
    return root / MANIFEST
