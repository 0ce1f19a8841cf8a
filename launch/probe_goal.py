"""Diagnostic (not a test): can a supervised network find the target in a dataset, and from what?

    python -m launch.probe_goal --data data/reach-at --given none|hue|video|robot_demo [--steps 2000] [--seed 0]
    python -m launch.probe_goal --data data/reach-ss --given video --head match [--hue-weight 1] [--steps 4500]

It predicts where the robot demo's effector ends (for reach: the target's position) from the robot's first frame,
with the policy's own trunk (conv + layer norm + spatial soft-argmax), given besides that frame:
- ``none``: nothing. It can only learn a scene prior, or memorise which target goes with which training scene;
- ``hue``: the target's hue as (cos, sin), an oracle identity that interpolates to unseen hues;
- ``video``: the feature points of three late frames of the task's human video (same trunk);
- ``robot_demo``: the same, from another robot demo of the task (another scene, the robot's camera): whether the
  target can be read from a demonstration at all, apart from the human video's viewpoint and look.
With ``--head match`` (``video`` or ``robot_demo`` only) the demonstration is read the way ``adaptation_loss.
target_match`` reads it: a ``TargetReader`` pools the first frame's features where the last frame scores highest, a
linear map makes that the query of an attention over the robot frame's feature map, and the attention's expected
(x, y) maps linearly to the table. ``--hue-weight`` adds the auxiliary loss of ``policy.hue_prediction``: the
target's hue read off the pooled appearance, against the task spec's label.
It prints the mean error and the fraction within 5 cm ("hit") on the training split and on the val split (new
objects) every 500 steps (and the hue error, for the match head). Hitting training samples from ``none`` means the
data let a model skip the video; compare against val to tell memorisation from a skill.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from demos.reader import PairDataset, target_hue
from imitation.layers import spatial_soft_argmax
from imitation.policy import Policy, PolicyConfig
from imitation.target_reader import TargetReader

GIVEN = ("none", "hue", "video", "robot_demo")  # besides the robot frame: nothing, the target's hue, 3 demo frames
HIT = 0.05  # metres
TABLE_CENTRE = (0.53, 0.0)


def load(root: str, split: str) -> dict[str, Tensor]:
    """Every (video, demo) pair of a split: the first and 3 late frames of the video and of another demo of the task,
    the first robot frame, the target's hue, the final effector xy."""
    data = PairDataset(root, split, image_size=64)
    rows: dict[str, list[Tensor]] = {"video": [], "robot_demo": [], "image": [], "hue": [], "goal": []}
    for i in range(len(data)):
        pair = data[i]
        task, demo = int(pair.task), i % data.num_demos
        t = pair.video.shape[0]
        frames = [0, t // 2, 3 * t // 4, t - 1]
        rows["video"].append(pair.video[frames])
        rows["robot_demo"].append(data.pair(task, 0, (demo + 1) % data.num_demos).images[frames])
        rows["image"].append(pair.images[0])
        rows["hue"].append(target_hue(data.tasks[task].spec))
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

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, None]:
        parts = [self.points(batch["image"])]
        if self.given == "hue":
            parts.append(batch["hue"])
        if self.given in ("video", "robot_demo"):
            late = batch[self.given][:, 1:]
            parts.append(self.points(late.reshape(-1, *late.shape[2:])).reshape(late.shape[0], -1))
        return 0.1 * self.mlp(torch.cat(parts, dim=-1)) + torch.tensor(TABLE_CENTRE), None


class MatchProbe(nn.Module):
    """The demonstration's first and last frames -> TargetReader -> query -> attention over the robot frame."""

    def __init__(self, given: str) -> None:
        super().__init__()
        if given not in ("video", "robot_demo"):
            raise SystemExit("--head match reads a demonstration: use --given video or --given robot_demo")
        self.trunk, self.given = Policy(PolicyConfig()).trunk, given
        channels = PolicyConfig().conv_filters[-1]
        self.reader, self.to_query = TargetReader(channels), nn.Linear(channels, channels)
        self.hue, self.to_table = nn.Linear(channels, 2), nn.Linear(2, 2)

    def maps(self, images: Tensor) -> Tensor:
        return self.trunk(images.reshape(-1, *images.shape[-3:]).permute(0, 3, 1, 2).float() / 255)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        ends = batch[self.given][:, [0, -1]]
        maps = self.maps(ends)
        maps = maps.reshape(*ends.shape[:2], *maps.shape[1:])
        appearance = torch.stack([self.reader(m)[1] for m in maps])
        scores = torch.einsum("nchw,nc->nhw", self.maps(batch["image"]), self.to_query(appearance)).unsqueeze(1)
        where = spatial_soft_argmax(scores, torch.ones(()))
        return 0.3 * self.to_table(where) + torch.tensor(TABLE_CENTRE), self.hue(appearance)


def error_and_hits(probe: nn.Module, data: dict[str, Tensor], limit: int = 600) -> tuple[float, float, float]:
    """Mean goal error (m), fraction of hits, mean hue error (chord on the unit circle; NaN without a hue head)."""
    with torch.no_grad():
        sample = {k: v[:limit] for k, v in data.items()}
        goal, hue = probe(sample)
        error = (goal - sample["goal"]).norm(dim=-1)
        hue_error = math.nan if hue is None else float((hue - sample["hue"]).norm(dim=-1).mean())
    return float(error.mean()), float((error < HIT).float().mean()), hue_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a reach dataset with train and val splits (64x64)")
    parser.add_argument("--given", choices=GIVEN, required=True, help="what the probe gets besides the robot frame")
    parser.add_argument("--head", choices=("mlp", "match"), default="mlp",
                        help="mlp: feature points into fully connected layers; match: the target_match reader")
    parser.add_argument("--hue-weight", type=float, default=0.0, help="weight of the auxiliary hue loss (match head)")
    parser.add_argument("--steps", type=int, default=2000, help="Adam steps of 32 samples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    train, val = load(args.data, "train"), load(args.data, "val")
    probe = GoalProbe(args.given) if args.head == "mlp" else MatchProbe(args.given)
    optimizer = torch.optim.Adam(probe.parameters(), 1e-3)
    generator = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps + 1):
        index = torch.randint(len(train["goal"]), (32,), generator=generator)
        batch = {k: v[index] for k, v in train.items()}
        goal, hue = probe(batch)
        loss = F.mse_loss(goal, batch["goal"])
        if hue is not None:
            loss = loss + args.hue_weight * F.mse_loss(hue, batch["hue"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 500 == 0:
            (te, th, tq), (ve, vh, vq) = error_and_hits(probe, train), error_and_hits(probe, val)
            hue_errors = f" (hue error {tq:.2f} / {vq:.2f})" if args.head == "match" else ""
            print(f"{args.given} {args.head} step {step}: train error {te:.3f} m, hit {th:.0%} | val error {ve:.3f} m, "
                  f"hit {vh:.0%}{hue_errors} | {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
