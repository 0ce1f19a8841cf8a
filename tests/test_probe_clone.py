"""launch.probe_clone: a clone of the reach expert from the true state acts, and position errors break it."""

from __future__ import annotations

import pytest

import envs
from launch.probe_clone import main, parse_args


def test_reach_clone_succeeds_from_the_true_state_and_fails_with_errors(capsys: pytest.CaptureFixture) -> None:
    main(["--family", "reach", "--fit-episodes", "10", "--test-episodes", "4", "--steps", "800", "--noise", "0", "0.08"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "reach: expert with demo noise 0.1: 10/10 episodes succeed"
    exact, noisy = (int(line.split(": ")[1].split("/")[0]) for line in lines if line.startswith("closed loop"))
    assert exact >= 3 and noisy <= 1, lines  # 8 cm errors on where the target is make it miss


def test_refuses_bad_arguments() -> None:
    for argv in (["--fit-episodes", "1"], ["--noise", "-0.01"], ["--family", "stack"], ["--steps", "0"]):
        with pytest.raises(SystemExit):
            parse_args(argv)


def test_privileged_view_needs_a_reset() -> None:
    env = envs.make("reach", image_size=32)
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.privileged_view()
    env.reset(seed=0)
    view = env.unwrapped.privileged_view()
    assert view.target_position.shape == (3,) and view.task.family == "reach"
    env.close()
