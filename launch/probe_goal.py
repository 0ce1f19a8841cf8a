"""Diagnostic (not a test): can a supervised network find the target in a dataset, and from what?

    python -m launch.probe_goal --data data/reach-at --given none|hue|video|robot_demo [--steps 2000] [--seed 0]

It predicts where the robot demo's effector ends (for reach: the target's position) from the robot's first frame,
with the policy's own trunk (conv + layer norm + spatial soft-argmax), given besides that frame:
- ``none``: nothing. It can only learn a scene prior, or memorise which target goes with which training scene;
- ``hue``: the target's hue as (cos, sin), an oracle identity that interpolates to unseen hues;
- ``video``: the feature points of three late frames of the task's human video (same trunk);
- ``robot_demo``: the same, from another robot demo of the task (another scene, the robot's camera): whether the
  target can be read from a demonstration at all, apart from the human video's viewpoint and look.
It prints the mean error and the fraction within 5 cm ("hit") on the training split and on the val split (new
objects) every 500 steps. Hitting training samples from ``none`` means the data let a model skip the video;
compare against val to tell memorisation from a skill.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from demos.reader import PairDataset
from imitation.layers import spatial_soft_argmax
from imitation.policy import Policy, PolicyConfig

GIVEN = ("none", "hue", "video", "robot_demo")  # besides the robot frame: nothing, the target's hue, 3 demo frames
HIT = 0.05  # metres
TABLE_CENTRE = (0.53, 0.0)


def load(root: str, split: str) -> dict[str, Tensor]:
    """Every (video, demo) pair of a split: 3 late frames of the video and of another demo of the task, the first
    robot frame, the target's hue, the final effector xy."""
    data = PairDataset(root, split, image_size=64)
    rows: dict[str, list[Tensor]] = {"video": [], "robot_demo": [], "image": [], "hue": [], "goal": []}
    for i in range(len(data)):
        pair = data[i]
        task, demo = int(pair.task), i % data.num_demos
        spec = data.tasks[task].spec
        angle = spec["objects"][spec["target"]]["hue"] * 2 * math.pi / 36
        t = pair.video.shape[0]
        late = [t // 2, 3 * t // 4, t - 1]
        rows["video"].append(pair.video[late])
        rows["robot_demo"].append(data.pair(task, 0, (demo + 1) % data.num_demos).images[late])
        rows["image"].append(pair.images[0])
        rows["hue"].append(torch.tensor([math.cos(angle), math.sin(angle)]))
        rows["goal"].append(pair.states[-1, :2])
    return {k: torch.stack(v) for k, v in rows.items()}


class GoalProbe(nn.Module):
    def __init__(self, given: str) -> None:
        super().__init__()
        policy = Policy(PolicyConfig())
        self.trunk, self.temperature, self.given = policy.trunk, policy.softmax_temperature, given
        points = 2 * PolicyConfig().conv_filters[-1]
        extra = {"none": 0, "hue": 2, "video": 3 * points, "robot_demo": 3 * points}[given]
        self.mlp = nn.Sequential(nn.Linear(points + extra, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 2))

    def points(self, images: Tensor) -> Tensor:
        return spatial_soft_argmax(self.trunk(images.permute(0, 3, 1, 2).float() / 255), self.temperature)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        parts = [self.points(batch["image"])]
        if self.given == "hue":
            parts.append(batch["hue"])
        if self.given in ("video", "robot_demo"):
            video = batch[self.given]
            parts.append(self.points(video.reshape(-1, *video.shape[2:])).reshape(video.shape[0], -1))
        return 0.1 * self.mlp(torch.cat(parts, dim=-1)) + torch.tensor(TABLE_CENTRE)


def error_and_hits(probe: GoalProbe, data: dict[str, Tensor], limit: int = 600) -> tuple[float, float]:
    with torch.no_grad():
        sample = {k: v[:limit] for k, v in data.items()}
        error = (probe(sample) - sample["goal"]).norm(dim=-1)
    return float(error.mean()), float((error < HIT).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a reach dataset with train and val splits (64x64)")
    parser.add_argument("--given", choices=GIVEN, required=True, help="what the probe gets besides the robot frame")
    parser.add_argument("--steps", type=int, default=2000, help="Adam steps of 32 samples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    train, val = load(args.data, "train"), load(args.data, "val")
    probe = GoalProbe(args.given)
    optimizer = torch.optim.Adam(probe.parameters(), 1e-3)
    generator = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps + 1):
        index = torch.randint(len(train["goal"]), (32,), generator=generator)
        batch = {k: v[index] for k, v in train.items()}
        loss = F.mse_loss(probe(batch), batch["goal"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 500 == 0:
            (te, th), (ve, vh) = error_and_hits(probe, train), error_and_hits(probe, val)
            print(f"{args.given} step {step}: train error {te:.3f} m, hit {th:.0%} | val error {ve:.3f} m, hit {vh:.0%} "
                  f"| {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
