"""Export a task for people to look at: H.264 mp4 files and a contact sheet of robot demo vs human video.

The OpenCV wheel has no H.264 encoder, so mp4 files go through the ffmpeg that imageio-ffmpeg ships (libx264,
yuv420p: what browsers play). Frames are enlarged by an integer factor with nearest-neighbour (64 px is tiny).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np

from demos.format import DatasetError, read_manifest
from demos.shards import open_shard, read_episode, resample_indices

GAP = 2  # pixels between the cells of a contact sheet
BACKGROUND = 255


def find_task(manifest: dict, task: str, split: str | None) -> tuple[str, dict]:
    """A task by id, or by index within a split (default train): (split, manifest task entry)."""
    splits = [split] if split else sorted(manifest["splits"])
    for name in splits:
        if name not in manifest["splits"]:
            raise DatasetError(f"no split {name!r} in this dataset (present: {', '.join(sorted(manifest['splits']))})")
        tasks = manifest["splits"][name]["tasks"]
        for t in tasks:
            if t["id"] == task or (task.isdigit() and t["index"] == int(task) and (split or name == "train")):
                return name, t
    raise DatasetError(f"no task {task!r} in split(s) {', '.join(splits)}; `oneshot-data info` lists them")


def enlarge(frames: np.ndarray, scale: int) -> np.ndarray:
    return frames.repeat(scale, axis=1).repeat(scale, axis=2) if scale > 1 else frames


def write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """uint8 (T, H, W, 3) RGB frames as an H.264 mp4 (an odd side is padded by one pixel: yuv420p needs even sides)."""
    frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), mode="edge")
    _, h, w, _ = frames.shape
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
                                         macro_block_size=1, quality=None, output_params=["-crf", "18"], ffmpeg_log_level="error")
    writer.send(None)  # start the generator
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


def contact_sheet(demo: np.ndarray, video: np.ndarray, columns: int) -> np.ndarray:
    """Cells in reading order, one per demo step: the robot frame above the human frame at the same relative time."""
    video = video[resample_indices(len(video), len(demo))]
    t, h, w, _ = demo.shape
    rows = -(-t // columns)
    sheet = np.full((rows * (2 * h + GAP) + GAP, columns * (w + GAP) + GAP, 3), BACKGROUND, np.uint8)
    for i in range(t):
        r, c = divmod(i, columns)
        y, x = GAP + r * (2 * h + GAP), GAP + c * (w + GAP)
        sheet[y:y + h, x:x + w] = demo[i]
        sheet[y + h:y + 2 * h, x:x + w] = video[i]
    return sheet


def export_task(root: Path, task: str, out: Path, split: str | None = None, demo: int = 0, video: int = 0,
                fps: float = 10.0, scale: int = 0, columns: int = 10) -> list[Path]:
    """Write <task>_demo<k>.mp4, <task>_video<k>.mp4 and <task>_sheet.png into `out`; returns their paths.

    `scale` 0 picks the factor that makes frames about 256 px.
    """
    manifest = read_manifest(Path(root))
    split, entry = find_task(manifest, task, split)
    for kind, k in (("demos", demo), ("videos", video)):
        if not 0 <= k < len(entry[kind]):
            raise DatasetError(f"task {entry['id']} has {len(entry[kind])} {kind}, no number {k}")
    with open_shard(Path(root) / entry["shard"]) as f:
        images = read_episode(f, entry["id"], "demos", demo)[0]
        frames = read_episode(f, entry["id"], "videos", video)[0]
    scale = scale or max(1, 256 // images.shape[1])
    out.mkdir(parents=True, exist_ok=True)
    stem = out / entry["id"]
    paths = [Path(f"{stem}_demo{demo}.mp4"), Path(f"{stem}_video{video}.mp4"), Path(f"{stem}_sheet.png")]
    write_mp4(paths[0], enlarge(images, scale), fps)
    write_mp4(paths[1], enlarge(frames, scale), fps)
    sheet = contact_sheet(enlarge(images, max(1, scale // 2)), enlarge(frames, max(1, scale // 2)), columns)
    if not cv2.imwrite(str(paths[2]), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {paths[2]}")
    return paths
