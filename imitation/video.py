"""Demonstration videos for test-time adaptation: read any video file, fit it to what the policy was trained on.

A video from anywhere (mp4, avi, ... through OpenCV; gif through imageio, since OpenCV's readers often lack a
gif decoder) becomes uint8 RGB frames (T, H, W, 3), centre-cropped to the policy's aspect ratio, resized to its
input size and resampled in time to the number of frames it was trained on (nearest frame, ends kept: the
same rule as the training reader, `demos.shards.resample_indices`).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np

from demos.shards import resample_indices

MIN_LENGTH_FRACTION = 0.25  # a video with fewer frames than this fraction of the trained length is refused


class VideoError(ValueError):
    """A video that cannot be used for adaptation; the message says which and why."""


def read_video(path: str | Path) -> np.ndarray:
    """All frames of a video file as uint8 RGB (T, H, W, 3); VideoError when missing, unreadable or empty."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    frames = _read_gif(path) if path.suffix.lower() == ".gif" else _read_opencv(path)
    if not frames:
        raise VideoError(f"{path}: the video has no frames")
    return np.stack(frames)


def _read_opencv(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise VideoError(f"{path}: OpenCV cannot open this file as a video (not a video, or a codec it lacks)")
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                return frames
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()


def _read_gif(path: Path) -> list[np.ndarray]:
    try:
        frames = iio.imread(path, index=None, plugin="pillow")
    except Exception as e:  # imageio raises several kinds for a file that is not a gif
        raise VideoError(f"{path}: cannot read this file as a gif ({type(e).__name__}: {e})") from e
    if frames.ndim == 3:  # one frame, or a greyscale animation: (T, H, W)
        frames = frames[None] if frames.shape[-1] in (3, 4) else frames[..., None].repeat(3, axis=-1)
    return [np.ascontiguousarray(f[..., :3]) for f in frames.astype(np.uint8)]


def fit_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop every frame to the aspect ratio of `size` = (height, width), then resize to it."""
    h, w = frames.shape[1:3]
    target_h, target_w = size
    if (h, w) == (target_h, target_w):
        return frames
    crop_h, crop_w = min(h, round(w * target_h / target_w)), min(w, round(h * target_w / target_h))
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    # INTER_AREA averages when shrinking (no aliasing); it is bilinear-like when enlarging
    return np.stack([cv2.resize(f[top:top + crop_h, left:left + crop_w], (target_w, target_h), interpolation=cv2.INTER_AREA)
                     for f in frames])


def prepare_video(frames: np.ndarray, size: tuple[int, int], length: int, stride: int = 1,
                  min_fraction: float = MIN_LENGTH_FRACTION, name: str = "video") -> np.ndarray:
    """uint8 RGB frames (T, H, W, 3) -> (ceil(length / stride), *size, 3): checked, cropped, resized, resampled.

    As in training: resampled to the demo length `length`, then every `stride`-th frame kept (the training
    loader's frame_stride). `name` says where the frames came from, for the error messages.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoError(f"{name}: expected RGB frames (T, H, W, 3), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise VideoError(f"{name}: expected uint8 frames, got {frames.dtype}")
    if len(frames) == 0:
        raise VideoError(f"{name}: the video has no frames")
    needed = max(2, math.ceil(min_fraction * length))
    if len(frames) < needed:
        raise VideoError(f"{name}: the video has {len(frames)} frames, far too short: the model was trained on {length}-frame "
                         f"videos and needs at least {needed}")
    return fit_frames(frames[resample_indices(len(frames), length)[::stride]], size)
