"""The diagnostics: launch.probe_clone (a clone of the reach expert from the true state acts, and position errors
break it), launch.probe_query (the shipped reach model reads the target from the video and finds it) and
launch.probe_grasp (the pick_place expert passes every stage, a random policy none past the first), and the geometry
behind launch.probe_depth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.core import ROBOT_CAMERA
from imitation.policy import quadratic
from launch import probe_clone, probe_depth, probe_grasp, probe_query
from launch.main import SHIPPED, SHIPPED_MODELS


def test_reach_clone_succeeds_from_the_true_state_and_fails_with_errors() -> None:
    args = probe_clone.parse_args(["--family", "reach", "--fit-episodes", "10", "--test-episodes", "4",
                                   "--steps", "800", "--noise", "0", "0.08"])
    report = probe_clone.probe(args)
    assert report.expert_wins == 10 and report.fit_on == 9
    assert report.closed_loop[0.0] >= 3 and report.closed_loop[0.08] <= 1, report  # 8 cm errors on the target: misses


def test_probe_clone_prints_its_report(capsys: pytest.CaptureFixture) -> None:
    probe_clone.main(["--family", "reach", "--fit-episodes", "2", "--test-episodes", "1", "--steps", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("reach: expert with demo noise 0.1: ") and lines[0].endswith("/2 episodes succeed")
    assert lines[2].startswith("closed loop, position error std 0.000 m: ") and lines[2].endswith("/1 succeed")


def test_refuses_bad_arguments() -> None:
    for argv in (["--fit-episodes", "1"], ["--noise", "-0.01"], ["--family", "stack"], ["--steps", "0"]):
        with pytest.raises(SystemExit):
            probe_clone.parse_args(argv)


def test_shipped_reach_model_reads_and_finds_the_target() -> None:
    summary = probe_query.probe(str(SHIPPED / SHIPPED_MODELS["reach"]["linear"]), split="val", tasks=10)
    assert summary.read_right >= 9  # the right object's hue, of 3 candidates
    assert summary.entropy < summary.uniform_entropy / 2  # the adapted query's softmax is peaked, not spread out
    assert np.all(summary.rmse < summary.spread / 2), (summary.rmse, summary.spread)  # its point locates the target
    assert summary.head_rmse is None  # trained without a target-position head
    assert summary.target_mass > 0.5 > 0.1 > summary.other_mass  # its softmax sits on the target, not the others
    shortened = probe_query.probe(str(SHIPPED / SHIPPED_MODELS["reach"]["linear"]), split="val", tasks=10, query_scale=0.05)
    assert shortened.entropy > 0.9 * shortened.uniform_entropy  # a short query's softmax spreads over the whole view
    assert shortened.rmse.mean() > 2 * summary.rmse.mean()  # and its point no longer locates the target


def test_softmax_places_weighs_the_mass_near_the_chosen_thing_and_the_others() -> None:
    """The probe's `where` and `place` shares: a softmax on the cell where the camera sees one thing counts for it."""
    size, cells = 64, 16
    things = [np.array([0.45, -0.15, 0.02]), np.array([0.60, 0.15, 0.02])]
    softmax = np.zeros((cells, cells))
    column, row = (ROBOT_CAMERA.project(things[1], size, size) * cells / size).astype(int)
    softmax[row, column] = 1.0
    assert probe_query.softmax_places(softmax, things, 1, size) == {"target_mass": 1.0, "other_mass": 0.0,
                                                                     "peak": (int(row), int(column))}
    assert probe_query.softmax_places(softmax, things, 0, size)["other_mass"] == 1.0


def test_localisation_holds_tasks_out_and_tells_the_first_frame_from_the_last_quarter() -> None:
    """A point that follows the target exactly until the arm comes and then wanders in u (the table's x) is precise on
    the first frame and off in x, not y, over the last quarter."""
    rng = np.random.default_rng(0)
    results = []
    for _ in range(20):
        target = rng.uniform([0.4, -0.2], [0.7, 0.2])
        points = np.tile((target - [0.55, 0.0]) * 5, (40, 1))
        points[30:, 0] += rng.normal(0, 0.1, 10)  # 2 cm of table x per 0.1 of u
        results.append({"points": list(points), "targets": [target] * 40})
    found = probe_query.localisation(results)
    assert np.all(found.first_frame < 0.005), found
    assert found.last_quarter[0] > 0.01 > 0.005 > found.last_quarter[1], found
    assert np.all(found.rmse < found.spread / 2), found


def test_probe_query_refuses_too_few_tasks() -> None:
    with pytest.raises(SystemExit):
        probe_query.parse_args(["--checkpoint", "x.pt", "--tasks", "4"])
    with pytest.raises(SystemExit):
        probe_query.parse_args(["--checkpoint", "x.pt", "--query-scale", "0"])


def test_probe_grasp_follows_the_stages(capsys: pytest.CaptureFixture) -> None:
    expert = probe_grasp.probe(None, "expert", tasks=3)  # val tasks 0-2, which the expert does (task 3's object is too flat)
    assert expert.reached == {stage: 3 for stage in probe_grasp.STAGES}
    assert expert.closed_away == expert.grasped_other == expert.other_box == 0
    closes = expert.close_offsets["success"]  # the expert closes at its grasp point, just above the centre
    assert closes.shape == (3, 3) and expert.close_offsets["failure"].shape == (0, 3)
    assert np.all(np.abs(closes[:, :2]) < 0.01) and np.all((closes[:, 2] > 0) & (closes[:, 2] < 0.02))
    probe_grasp.main(["--method", "random", "--tasks", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "random: pick_place, val split, 3 episodes (evaluation seed 0)"
    assert "grasped it 0" in lines[1] and lines[1].endswith("success 0")
    assert lines[2].startswith("grasped another 0; first close away from the target 3;")  # it closes in the air at once
    assert lines[3].startswith("first close, effector minus target (x, y, z), failure (3 episodes): mean ")


def test_probe_grasp_refuses_what_it_cannot_probe() -> None:
    with pytest.raises(SystemExit):
        probe_grasp.parse_args(["--method", "daml"])  # no checkpoint to adapt
    with pytest.raises(SystemExit):
        probe_grasp.parse_args(["--method", "expert", "--tasks", "0"])
    with pytest.raises(ValueError, match="trained on reach, not pick_place"):
        probe_grasp.probe(str(SHIPPED / SHIPPED_MODELS["reach"]["linear"]), "daml", tasks=1)


def test_through_the_robot_camera_a_point_is_affine_in_its_depth_features_not_in_its_pixel() -> None:
    """The premise of policy.query_depth and launch.probe_depth: a world point is affine in (z, z u, z v) of the
    pixel it projects to (z its depth along the camera's axis, (u, v) the pixel in [-1, 1]); from the pixel alone a
    quadratic map misses it by centimetres along the camera's axis."""
    rng = np.random.default_rng(0)
    points = rng.uniform([0.35, -0.2, 0.0], [0.75, 0.2, 0.15], (400, 3))
    u, v = (np.array([ROBOT_CAMERA.project(p, 64, 64) for p in points]) / 32 - 1).T
    eye, target = np.array(ROBOT_CAMERA.eye), np.array(ROBOT_CAMERA.target)
    z = (points - eye) @ ((target - eye) / np.linalg.norm(target - eye))
    pixel = quadratic(torch.from_numpy(np.c_[u, v])).numpy()
    train = np.arange(len(points)) < 240
    with_depth = probe_depth.held_out_errors(np.c_[pixel, z, z * u, z * v], points, train)[~train]
    without = probe_depth.held_out_errors(pixel, points, train)[~train]
    assert np.abs(with_depth).max() < 1e-6
    assert np.sqrt((without ** 2).mean(0))[0] > 0.01  # x: the camera looks along it (and down)


def test_the_depth_probe_s_approach_ends_at_the_first_close_and_leaves_out_a_lifted_target() -> None:
    """launch.probe_depth's approach frames: before the fingers first close, with the target on the table; not the
    carry, nor the frames after the release (fingers open again, the target in its box)."""
    opening = np.array([0.08, 0.08, 0.08, 0.02, 0.02, 0.08, 0.08])
    height = np.array([0.02, 0.02, 0.02, 0.02, 0.10, 0.03, 0.03])
    assert probe_depth.approach_frames(height, opening).tolist() == [True, True, True, False, False, False, False]
    pushed_up = np.array([0.02, 0.02, 0.04, 0.04, 0.04, 0.04, 0.04])  # never closed; knocked onto something
    assert probe_depth.approach_frames(pushed_up, np.full(7, 0.08)).tolist() == [True, True] + [False] * 5
