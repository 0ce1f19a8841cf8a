"""Where a training run reports: always `metrics.jsonl`, wandb in offline mode (or nothing), and a tqdm progress bar.

wandb never reaches the network here: only ``mode="offline"`` is used, with every wandb folder (run files, cache,
settings) inside the run folder; `wandb sync <run_dir>/wandb/offline-run-*` uploads it later.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from demos.reader import Pair

LOGGER_KINDS = ("wandb", "none")
METRICS = "metrics.jsonl"


@dataclass
class LoggerConfig:
    """Experiment tracking. Group `logger`: `wandb` (offline, the default) or `none` (tests)."""

    kind: str = "wandb"  # "wandb" (offline mode, files in <run_dir>/wandb) or "none"; metrics.jsonl is always written
    project: str = "oneshot-imitation"  # wandb project name (used when the offline run is synced)
    group: str = ""  # wandb group (e.g. a sweep name); empty = none
    strip_every: int = 500  # steps between frame strips of a video and its demo (wandb only; 0 = never)
    strip_frames: int = 8  # frames in a strip

    def __post_init__(self) -> None:
        if self.kind not in LOGGER_KINDS:
            raise ValueError(f"logger.kind must be one of {LOGGER_KINDS}, got {self.kind!r}")


class RunLogger:
    """Scalars to metrics.jsonl and wandb, figures to the progress bar. Make one on rank 0 only."""

    def __init__(self, run_dir: Path, cfg: LoggerConfig, config: dict[str, Any], *, total_steps: int,
                 start_step: int, progress: bool) -> None:
        self.cfg = cfg
        self.metrics = open(run_dir / METRICS, "a")
        self.wandb_run = _wandb_run(run_dir, cfg, config) if cfg.kind == "wandb" else None
        self.bar = tqdm(total=total_steps, initial=start_step, disable=not progress, unit="step", dynamic_ncols=True)

    def log(self, step: int, values: dict[str, float]) -> None:
        """One line of metrics.jsonl (and a wandb entry) for ``step``: keys like "train/outer_loss"."""
        self.metrics.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        self.metrics.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)

    def progress(self, step: int, figures: dict[str, float]) -> None:
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in figures.items()}, refresh=False)

    def strip(self, step: int, pair: Pair) -> None:
        """A strip of frames of the first task's video (top) and robot demo (bottom), every ``strip_every`` steps."""
        if self.wandb_run is None or not self.cfg.strip_every or step % self.cfg.strip_every:
            return
        import wandb

        image = frame_strip(pair.video[0].numpy(), pair.images[0].numpy(), self.cfg.strip_frames)
        self.wandb_run.log({"train/video_and_demo": wandb.Image(image, caption="human video / robot demo")}, step=step)

    def close(self) -> None:
        self.bar.close()
        self.metrics.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def frame_strip(video: np.ndarray, demo: np.ndarray, count: int) -> np.ndarray:
    """(2H, count*W, 3) uint8: ``count`` evenly spaced frames of a video above those of a demo."""
    rows = [np.concatenate(list(frames[np.linspace(0, len(frames) - 1, count).round().astype(int)]), axis=1)
            for frames in (video, demo)]
    return np.concatenate(rows, axis=0)


def _wandb_run(run_dir: Path, cfg: LoggerConfig, config: dict[str, Any]) -> Any:
    import wandb

    folder = run_dir / "wandb"  # wandb puts its run files in <WANDB_DIR>/wandb
    folder.mkdir(exist_ok=True)
    os.environ["WANDB_DIR"] = str(run_dir)
    for var, sub in (("WANDB_CACHE_DIR", ".cache"), ("WANDB_CONFIG_DIR", ".config"), ("WANDB_DATA_DIR", ".data")):
        os.environ[var] = str(folder / sub)
    os.environ["WANDB_MODE"] = "offline"
    return wandb.init(mode="offline", dir=str(run_dir), project=cfg.project, group=cfg.group or None,
                      name=run_dir.name, config=config)
