"""What an evaluation reports: success rates with 95% Wilson intervals, a Markdown table and a bar plot.

The plot is drawn with OpenCV (already a dependency) rather than matplotlib, to keep the install small.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion: sensible at 0 and n successes, unlike the normal one."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Row:
    """One line of the summary: a method (of a checkpoint) over all its episodes."""

    checkpoint: str  # the checkpoint's name, "-" for methods that use none (random, expert)
    method: str  # e.g. "daml", "daml@5" (5 inner steps at test time), "robot_demo", "none"
    successes: int
    n: int
    rate: float
    low: float  # 95% Wilson interval
    high: float
    went_for_target: int = 0  # episodes whose chosen object (env info "chosen_object") was the target, success or not

    def to_dict(self) -> dict:
        return asdict(self)


def summarise(episodes: Iterable[dict], order: list[tuple[str, str]]) -> list[Row]:
    """Rows in `order` ((checkpoint, method) pairs) from per-episode records with keys checkpoint, method, success,
    went_for_target."""
    counts = {key: [0, 0, 0] for key in order}
    for e in episodes:
        c = counts[(e["checkpoint"], e["method"])]
        c[0] += bool(e["success"])
        c[1] += 1
        c[2] += bool(e["went_for_target"])
    return [Row(ckpt, method, s, n, s / n if n else 0.0, *wilson_interval(s, n), t)
            for (ckpt, method), (s, n, t) in counts.items()]


def markdown_table(rows: list[Row], title: str, notes: list[str]) -> str:
    lines = [f"### {title}", "", "| checkpoint | method | success | 95% interval | went for the target | n |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.checkpoint} | {r.method} | {100 * r.rate:.1f}% ({r.successes}/{r.n}) | "
              f"{100 * r.low:.1f}-{100 * r.high:.1f}% | {100 * r.went_for_target / max(r.n, 1):.0f}% | {r.n} |" for r in rows]
    return "\n".join([*lines, "", *notes, ""])


# ----- bar plot ------------------------------------------------------------------------------------------------
BAR_W, GAP_W, PLOT_H, MARGIN_L, MARGIN_T, MARGIN_B = 90, 30, 300, 60, 40, 70
INK, GRID, BAR, CHANCE = (40, 40, 40), (220, 220, 220), (180, 120, 50), (60, 60, 200)  # BGR
FONT = cv2.FONT_HERSHEY_SIMPLEX


def bar_plot(rows: list[Row], title: str, chance: float | None = None) -> np.ndarray:
    """Success rate per row with its 95% interval as whiskers; a dashed line at chance level. RGB uint8."""
    width = MARGIN_L + len(rows) * (BAR_W + GAP_W) + GAP_W
    img = np.full((MARGIN_T + PLOT_H + MARGIN_B, max(width, 360), 3), 255, np.uint8)
    y_of = lambda v: int(round(MARGIN_T + PLOT_H * (1 - v)))  # noqa: E731
    for tick in range(0, 101, 20):
        y = y_of(tick / 100)
        cv2.line(img, (MARGIN_L, y), (width - GAP_W // 2, y), GRID, 1)
        cv2.putText(img, f"{tick}%", (8, y + 4), FONT, 0.4, INK, 1, cv2.LINE_AA)
    for i, r in enumerate(rows):
        x0 = MARGIN_L + GAP_W + i * (BAR_W + GAP_W)
        cv2.rectangle(img, (x0, y_of(r.rate)), (x0 + BAR_W, y_of(0)), BAR, -1)
        mid = x0 + BAR_W // 2
        cv2.line(img, (mid, y_of(r.low)), (mid, y_of(r.high)), INK, 2)
        for v in (r.low, r.high):
            cv2.line(img, (mid - 8, y_of(v)), (mid + 8, y_of(v)), INK, 2)
        cv2.putText(img, f"{100 * r.rate:.0f}%", (x0 + 4, y_of(r.rate) - 6), FONT, 0.45, INK, 1, cv2.LINE_AA)
        for k, text in enumerate((r.method, r.checkpoint if r.checkpoint != "-" else "", f"n={r.n}")):
            cv2.putText(img, text[:14], (x0, y_of(0) + 18 + 16 * k), FONT, 0.4, INK, 1, cv2.LINE_AA)
    if chance is not None:
        y = y_of(chance)
        for x in range(MARGIN_L, width - GAP_W // 2, 12):
            cv2.line(img, (x, y), (min(x + 6, width - GAP_W // 2), y), CHANCE, 2)
        cv2.putText(img, "chance", (MARGIN_L + 2, y - 5), FONT, 0.4, CHANCE, 1, cv2.LINE_AA)
    cv2.putText(img, title, (MARGIN_L, 24), FONT, 0.5, INK, 1, cv2.LINE_AA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_png(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
