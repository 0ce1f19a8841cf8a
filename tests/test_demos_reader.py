"""The training reader (pairs of one task, DataLoader workers, refusals) and the seed rule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from demos import DatasetMismatchError, FormatVersionError, ManifestError, ShardError
from demos.reader import MetaBatchSampler, PairDataset
from demos.seeds import split_tasks, stream_seed
from demos.shards import read_episode, resample_indices
from demos.testing import reference, run_collect, run_data  # noqa: F401 (a fixture)
from envs.tasks.reach import TOUCH_DISTANCE


def test_pairs_are_uint8_videos_resampled_to_the_demo_of_the_same_task(reference: Path) -> None:
    ds = PairDataset(reference, "train", image_size=32)
    assert len(ds) == 2 * 1 * 2
    pair = ds[3]  # task 1, video 0, demo 1
    assert pair.task.item() == 1
    assert pair.video.dtype == pair.images.dtype == torch.uint8 and pair.video.shape == pair.images.shape == (40, 32, 32, 3)
    assert pair.states.shape == (40, 11) and pair.actions.shape == (40, 4) and pair.actions.dtype == torch.float32
    with h5py.File(reference / ds.tasks[1].shard) as f:
        (frames,) = read_episode(f, ds.tasks[1].id, "videos", 0)
        images, _, actions = read_episode(f, ds.tasks[1].id, "demos", 1)
    assert np.array_equal(pair.video.numpy(), frames[resample_indices(len(frames), 40)])
    assert np.array_equal(pair.images.numpy(), images) and np.array_equal(pair.actions.numpy(), actions)
    pair.images.zero_()  # a caller writing into a tensor must not change what the cache holds
    assert np.array_equal(ds[3].images.numpy(), images)
    spec = ds.tasks[1].spec  # the training label: the target's hue angle as (cos, sin)
    angle = np.deg2rad(10 * spec["objects"][spec["target"]]["hue"])
    np.testing.assert_allclose(pair.target_hue.numpy(), [np.cos(angle), np.sin(angle)], atol=1e-6)


def test_demos_record_where_the_target_is(reference: Path) -> None:
    """Reach's target stays put, and the expert's effector ends on it: the label is the target, in the world frame."""
    ds = PairDataset(reference, "train", image_size=32)
    assert ds.has_target_positions
    for index in range(len(ds)):
        pair = ds[index]
        positions = pair.target_positions.numpy()
        assert positions.shape == (40, 3) and positions.dtype == np.float32
        np.testing.assert_allclose(positions, positions[:1].repeat(40, axis=0), atol=2e-3)
        assert np.linalg.norm(pair.states[-1, :3].numpy() - positions[-1]) < TOUCH_DISTANCE


def test_format_1_reads_without_target_positions(reference: Path, tmp_path: Path) -> None:
    old = Path(shutil.copytree(reference, tmp_path / "old"))
    manifest = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    for shard in old.glob("train/*.h5"):
        with h5py.File(shard, "r+") as f:
            for name in [n for n in _dataset_names(f) if n.endswith("/target_positions")]:
                del f[name]
    ds = PairDataset(old, "train", image_size=32)
    assert not ds.has_target_positions and torch.isnan(ds[0].target_positions).all()
    assert torch.equal(ds[0].actions, PairDataset(reference, "train", image_size=32)[0].actions)


def _dataset_names(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    return names


def test_resample_keeps_the_ends_and_the_order() -> None:
    idx = resample_indices(25, 40)
    assert idx[0] == 0 and idx[-1] == 24 and np.all(np.diff(idx) >= 0) and len(idx) == 40
    assert list(resample_indices(5, 3)) == [0, 2, 4]


def test_dataloader_workers_and_in_process_sampling_give_meta_batches_of_distinct_tasks(reference: Path) -> None:
    ds = PairDataset(reference, "train", image_size=32)
    ds[0]  # opens a file in this process: workers must not use that handle
    loader = DataLoader(ds, batch_sampler=MetaBatchSampler(ds, num_tasks=2, num_batches=4, seed=0), num_workers=2)
    batches = list(loader)
    assert len(batches) == 4 and all(sorted(b.task.tolist()) == [0, 1] for b in batches)
    assert batches[0].video.shape == (2, 40, 32, 32, 3) and batches[0].video.dtype == torch.uint8
    a, b = ds.sample(np.random.default_rng(1), 2), ds.sample(np.random.default_rng(1), 2)
    assert len(set(a.task.tolist())) == 2 and all(torch.equal(x, y) for x, y in zip(a, b))
    assert next(ds.batches(np.random.default_rng(1), 2)).task.tolist() == a.task.tolist()


def test_reader_refuses_another_image_size_family_or_format(reference: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetMismatchError, match="images are 32x32, the reader was asked for 64x64"):
        PairDataset(reference, "train", image_size=64)
    with pytest.raises(DatasetMismatchError, match="a 'reach' dataset, the reader was asked for 'push'"):
        PairDataset(reference, "train", image_size=32, family="push")
    manifest = json.loads((reference / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 3}))
    with pytest.raises(FormatVersionError, match="newer"):
        PairDataset(tmp_path, "train", image_size=32)
    (tmp_path / "manifest.json").write_text("[]")
    with pytest.raises(ManifestError, match="corrupt manifest"):
        PairDataset(tmp_path, "train", image_size=32)


def test_depth_is_recorded_with_each_demo_frame_and_read_as_a_fourth_channel(reference: Path, tmp_path: Path) -> None:
    """env.depth=true: the demos keep the camera's depth levels, and a reader asked for depth appends them to the
    images; the same seeds give the same RGB frames as without depth. A dataset without depth is refused."""
    out = tmp_path / "depth"
    run_collect(out, "num_tasks=1", "demos_per_task=1", "env.depth=true")
    assert json.loads((out / "manifest.json").read_text())["env"]["config"]["depth"] is True
    assert run_data("validate", out).returncode == 0 and "depth=true" in run_data("info", out).stdout
    pair = PairDataset(out, "train", image_size=32, depth=True)[0]
    plain = PairDataset(reference, "train", image_size=32)[0]
    assert pair.images.shape == (40, 32, 32, 4) and pair.video.shape == (40, 32, 32, 3)
    assert torch.equal(pair.images[..., :3], plain.images) and torch.equal(pair.actions, plain.actions)
    assert pair.images[..., 3].min() >= 1  # every pixel measured (level 0 would say "no depth")
    assert len(PairDataset(out, "train", image_size=32)[0].images[0, 0, 0]) == 3  # not asked: RGB only
    with pytest.raises(DatasetMismatchError, match="env.depth=true"):
        PairDataset(reference, "train", image_size=32, depth=True)


def test_reader_names_a_missing_shard(reference: Path, tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text((reference / "manifest.json").read_text())
    ds = PairDataset(tmp_path, "train", image_size=32)
    with pytest.raises(ShardError, match="shard-00000-of-00002.h5: shard missing"):
        ds[0]


def test_seed_streams_are_disjoint_and_reproducible() -> None:
    seeds = {stream_seed(7, split, task, kind, attempt)
             for split in ("train", "val", "test", "test_ood") for task in range(20) for kind in ("task", "demo", "video")
             for attempt in range(5)}
    assert len(seeds) == 4 * 20 * 3 * 5
    assert stream_seed(7, "val", 3, "video", 2) == 7 << 45 | 1 << 42 | 3 << 22 | 2 << 20 | 2
    with pytest.raises(ValueError, match="base_seed"):
        stream_seed(1 << 16, "train", 0, "demo", 0)


def test_task_lists_are_distinct_deterministic_and_prefix_stable() -> None:
    tasks = split_tasks(0, "push", "val", 30)
    assert len({t.task_id() for t in tasks}) == 30 and all(t.split == "val" for t in tasks)
    assert split_tasks(0, "push", "val", 10) == tasks[:10]
    assert split_tasks(1, "push", "val", 10) != tasks[:10]
