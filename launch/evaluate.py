"""`oneshot-eval`: evaluate checkpoints on held-out tasks (also `python -m launch.evaluate`).

    oneshot-eval checkpoint=runs/reach/last.pt num_tasks=50 trials=2 out=runs/eval/reach
    oneshot-eval ++checkpoints='{daml: runs/reach/last.pt, linear: runs/reach-linear/last.pt}' inner_steps='[1,5]' out=...
    oneshot-eval checkpoint=... dataset=data/reach split=test logger=none out=...

Every field is documented in imitation/evaluate.py (EvalConfig); what the methods and seeds mean is in its
module docstring and in docs/evaluate.md. Hydra's resolved config and log go to <out>/hydra/.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from demos.format import DatasetError
from imitation.evaluate import RESULTS, EvalConfig, run_evaluation
from imitation.video import VideoError

log = logging.getLogger("oneshot-eval")
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # absolute: console scripts have no package-relative path

ConfigStore.instance().store(name="evaluate_schema", node=EvalConfig)


@hydra.main(config_path=str(CONF_DIR), config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config: EvalConfig = OmegaConf.to_object(cfg)
    try:
        report = run_evaluation(config)
    except (DatasetError, VideoError, ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"oneshot-eval: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("oneshot-eval: interrupted; nothing was written", file=sys.stderr)
        raise SystemExit(130) from None
    print(report.markdown)
    log.info("%d episodes in %.1f s (%.1f episodes/min)", len(report.episodes), report.seconds, report.episodes_per_minute)
    videos = sorted({e["rollout_video"] for e in report.episodes if e["rollout_video"]})
    log.info("results: %s; side-by-side videos: %s", report.out / RESULTS, report.out / "videos" if videos else "none")


if __name__ == "__main__":
    main()
