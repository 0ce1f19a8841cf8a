"""oneshot-data (info, validate, export, join) and the errors of bad datasets, through the real command."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py

from demos.testing import reference, scratch  # noqa: F401 (fixtures)
from demos.testing import run_data as data


def shard(root: Path, k: int = 0) -> Path:
    return root / f"train/shard-0000{k}-of-00002.h5"


def test_info_and_validate_a_sound_dataset(reference: Path) -> None:
    info = data("info", reference)
    assert info.returncode == 0 and "family=reach image_size=32" in info.stdout
    row = next(line for line in info.stdout.splitlines() if line.startswith("train"))
    assert row.split()[1:5] == ["2", "0", "4", "2"]  # tasks, skipped, demos, videos
    result = data("validate", reference)
    assert result.returncode == 0 and "valid" in result.stdout, result.stderr


def test_validate_catches_a_truncated_shard(scratch: Path) -> None:
    path = shard(scratch, 1)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    result = data("validate", scratch)
    assert result.returncode == 1
    assert "train/shard-00001-of-00002.h5: file:" in result.stderr and "truncated" in result.stderr


def test_validate_catches_a_flipped_byte_and_names_the_field(scratch: Path) -> None:
    path = shard(scratch, 0)
    with h5py.File(path, "r") as f:
        name = next(n for n in f["tasks"])
        chunk = f[f"tasks/{name}/demos/1/images"].id.get_chunk_info(0)
    raw = bytearray(path.read_bytes())
    raw[chunk.byte_offset + chunk.size // 2] ^= 0x01  # one bit, in the middle of the compressed frames of demo 1
    path.write_bytes(bytes(raw))
    result = data("validate", scratch)
    assert result.returncode == 1
    assert "train/shard-00000-of-00002.h5: sha256: digest differs" in result.stderr
    assert f"/tasks/{name}/demos/1/images: unreadable" in result.stderr, result.stderr  # the checksum names the field


def test_validate_catches_a_missing_shard_and_a_stray_file(scratch: Path) -> None:
    shard(scratch, 1).unlink()
    (scratch / "train" / "shard-00000-of-00002.h5.tmp-123").write_bytes(b"")
    result = data("validate", scratch)
    assert result.returncode == 1
    assert "shard-00001-of-00002.h5: file: missing" in result.stderr and "tmp-123: file: not listed" in result.stderr


def test_export_writes_h264_mp4_readable_by_opencv_and_a_contact_sheet(reference: Path, tmp_path: Path) -> None:
    result = data("export", reference, "--task", "1", "--demo", "1", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((reference / "manifest.json").read_text())
    task = manifest["splits"]["train"]["tasks"][1]
    for name, frames in ((f"{task['id']}_demo1.mp4", 40), (f"{task['id']}_video0.mp4", task["videos"][0]["length"])):
        capture = cv2.VideoCapture(str(tmp_path / name))
        assert int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little") in (b"h264", b"avc1")
        count = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            assert frame.shape == (256, 256, 3)
        assert count == frames
    sheet = cv2.imread(str(tmp_path / f"{task['id']}_sheet.png"))
    assert sheet is not None and sheet.shape == (4 * (2 * 128 + 2) + 2, 10 * (128 + 2) + 2, 3)  # 40 cells of 128 px, 10 a row


def test_export_of_an_unknown_task_is_a_clear_error(reference: Path, tmp_path: Path) -> None:
    result = data("export", reference, "--task", "no-such-task", "--out", tmp_path)
    assert result.returncode == 2 and "no task 'no-such-task'" in result.stderr


def test_corrupt_manifest(scratch: Path) -> None:
    (scratch / "manifest.json").write_text('{"format": "oneshot-demos", "format_vers')
    for command in ("info", "validate"):
        result = data(command, scratch)
        assert result.returncode == 2 and "corrupt manifest" in result.stderr


def test_newer_format_version(scratch: Path) -> None:
    manifest = json.loads((scratch / "manifest.json").read_text())
    (scratch / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    result = data("validate", scratch)
    assert result.returncode == 2 and "format version 99 is newer than this code reads (2)" in result.stderr


def test_join_rebuilds_the_manifest_and_names_missing_shards(scratch: Path) -> None:
    before = json.loads((scratch / "manifest.json").read_text())
    (scratch / "manifest.json").unlink()
    assert data("info", scratch).returncode == 2
    assert data("join", scratch).returncode == 0
    after = json.loads((scratch / "manifest.json").read_text())
    assert {**after, "code_version": None} == {**before, "code_version": None}  # colleagues may commit meanwhile
    shard(scratch, 0).unlink()
    result = data("join", scratch)
    assert result.returncode == 2 and "1 of 2 shards missing (train/shard-00000-of-00002.h5)" in result.stderr
