"""The checkpoints that `make run` evaluates are in the repository, load alone, and are what their README says."""

from __future__ import annotations

import numpy as np
import torch

from imitation.checkpoint import CheckpointInfo, read_checkpoint
from imitation.policy import POLICY_HEAD
from imitation.rollout import Rollout
from imitation.video_conditioned import VideoConditionedLearner
from launch.main import SHIPPED, SHIPPED_MODELS


def adapted_to_a_random_video(rollout: Rollout) -> tuple[dict, dict]:
    """The parameters after adapting to 30 frames of noise, and before."""
    video = np.random.default_rng(0).integers(0, 256, (30, *rollout.image_size, 3), dtype=np.uint8)
    return rollout.adapt(video), rollout.initial_params()


def test_shipped_checkpoints_load_and_adapt_from_a_video() -> None:
    rollouts = {name: Rollout.from_checkpoint(SHIPPED / file) for name, file in SHIPPED_MODELS["reach"].items()}
    anchor, daml, linear, black_box = (rollouts[name] for name in ("anchor", "daml", "linear", "blackbox"))
    for learned_loss in (anchor, daml, linear):
        assert set(learned_loss.learner.cfg.adapt_only) == {*POLICY_HEAD, "target_query"}
        assert not isinstance(learned_loss.learner, VideoConditionedLearner)
    assert isinstance(black_box.learner, VideoConditionedLearner)
    kinds = (anchor.info.model.adaptation_loss.kind, daml.info.model.adaptation_loss.kind, linear.info.model.adaptation_loss.kind)
    assert kinds == ("linear", "temporal", "linear")
    assert anchor.info.model.policy.query_anchor and not linear.info.model.policy.query_anchor
    # as checkpoints/README.md says: anchor and linear are the means of their runs' checkpoints at steps 7500 to 10000
    assert (anchor.info.step, daml.info.step, linear.info.step, black_box.info.step) == (10000, 9000, 10000, 9500)
    for name in ("anchor", "linear"):
        averaged = read_checkpoint(SHIPPED / SHIPPED_MODELS["reach"][name])["averaged_from"]
        assert [source["step"] for source in averaged] == list(range(7500, 10001, 500))
    for rollout in rollouts.values():
        assert tuple(rollout.info.model.policy.conv_strides) == (2, 2, 1)  # all read a 16x16 last feature map
        assert rollout.info.model.adaptation_loss.target_match and rollout.info.model.policy.hue_prediction
        assert rollout.info.env["family"] == "reach" and rollout.image_size == (64, 64)
        assert rollout.action_gain == 1.0  # reach-anchor.pt: the val split kept 1 (session 23); the others not swept
        adapted, initial = adapted_to_a_random_video(rollout)
        assert any(not torch.equal(adapted[name], initial[name]) for name in initial)


# file: (adaptation loss kind, step, lr schedule, the action gain the val split chose in session 23)
PUSH_MODELS = {"push-daml.pt": ("temporal", 3500, "constant", 1.5), "push-linear.pt": ("linear", 7500, "constant", 1.75),
               "push-blackbox.pt": ("encoder", 8000, "cosine", 2.0)}


def continued_shipped_file(file: str, family: str, kind: str, step: int, strides: tuple[int, ...]) -> CheckpointInfo:
    """Load checkpoints/FILE and check what the staged push and pick_place files share: each stage started from the file
    it replaced (`init_from`), at a meta-batch of 16, and one inner step on a video re-aims the target query."""
    rollout = Rollout.from_checkpoint(SHIPPED / file)
    info = rollout.info
    assert info.env["family"] == family and info.step == step and info.model.adaptation_loss.kind == kind
    assert info.train_config["init_from"] == f"checkpoints/{file}"
    assert info.train_config["meta_batch"] == 16 and tuple(info.model.policy.conv_strides) == strides
    adapted, initial = adapted_to_a_random_video(rollout)
    assert not torch.equal(adapted["target_query"], initial["target_query"])
    return info


def test_shipped_push_checkpoints_continued_the_ones_before() -> None:
    """checkpoints/push-*.pt (`make run` evaluates them with `--family push`): each run started from the file it replaced (checkpoints/README.md):
    DAML and linear are session 12's GPU stage (`FROM=checkpoints launch/gpu_train.sh push`) at the steps val chose,
    the black box session 13's CPU stage, annealed (`lr_schedule=cosine`) to its last step; each deploys with the action
    gain the val split chose (session 23, oneshot-set-gain)."""
    assert set(SHIPPED_MODELS["push"].values()) == set(PUSH_MODELS)
    for file, (kind, step, schedule, gain) in PUSH_MODELS.items():
        info = continued_shipped_file(file, "push", kind, step, (2, 2, 1))
        assert info.action_gain == gain
        assert info.train_config["meta"]["meta_lr"] == 1e-3
        assert info.train_config.get("lr_schedule", "constant") == schedule
        assert schedule == "constant" or info.train_config["steps"] == step
        assert info.model.bc.query_map_weight == 1


def test_shipped_pick_place_checkpoint_reads_the_object_and_the_box() -> None:
    """checkpoints/pick_place-daml.pt (`make run --family pick_place`'s headline): session 18's run `pp6-data` at step 7000 (of a 10000-step
    anneal; the val split chose it), session 17's file (a place query, a 32x32 last feature map, 1200 tasks) trained on
    twice the data again, 2388 tasks, at half the outer learning rate (checkpoints/README.md)."""
    rollout = Rollout.from_checkpoint(SHIPPED / "pick_place-daml.pt")
    info = rollout.info
    assert info.env["family"] == "pick_place" and info.step == 7000 and rollout.image_size == (64, 64)
    assert info.model.adaptation_loss.kind == "temporal" and info.model.adaptation_loss.target_match
    assert info.model.adaptation_loss.place_match and info.model.policy.place_query and info.model.bc.place_map_weight == 1
    assert info.model.bc.query_map_weight == 1 and tuple(info.model.policy.conv_strides) == (2, 1, 1)
    assert info.train_config["meta_batch"] == 8 and info.train_config["loader"]["frame_stride"] == 4
    assert info.train_config["data"] == "data/pp4" and info.model.meta.meta_lr == 0.0005
    assert info.train_config["init_from"] == "checkpoints/pick_place-daml.pt"  # session 17's file, at 2bdd4ab
    assert info.train_config["lr_schedule"] == "cosine" and info.train_config["steps"] == 10000
    assert info.git_revision.startswith("2bdd4ab") and info.action_gain == 0.75  # the val split's gain (session 23)
    adapted, initial = adapted_to_a_random_video(rollout)
    for query in ("target_query", "place_query"):
        assert not torch.equal(adapted[query], initial[query])


# file: (adaptation loss kind, step of the CPU stage)
PICK_PLACE_ABLATION = {"pick_place-daml-gpu.pt": ("temporal", 1500), "pick_place-linear.pt": ("linear", 1500),
                       "pick_place-blackbox.pt": ("encoder", 1000)}


def test_shipped_pick_place_ablation_trained_alike() -> None:
    """checkpoints/pick_place-{daml-gpu,linear,blackbox}.pt (in `make run --family pick_place`): session 19's runs from scratch on one
    GPU (`launch/gpu_train.sh pick_place`), each trained on by the same 1500-step anneal on data/pp4
    (checkpoints/README.md), at the steps val chose; the two learned losses read the box too."""
    assert set(SHIPPED_MODELS["pick_place"].values()) == {"pick_place-daml.pt", *PICK_PLACE_ABLATION}
    for file, (kind, step) in PICK_PLACE_ABLATION.items():
        info = continued_shipped_file(file, "pick_place", kind, step, (2, 1, 1))
        assert info.train_config["data"] == "data/pp4"
        assert info.train_config["lr_schedule"] == "cosine" and info.train_config["steps"] == 1500
        assert info.model.policy.place_query == (kind != "encoder") and info.git_revision.startswith("2521be1")
        assert info.action_gain == 1.0  # the val split kept 1 (session 23)
