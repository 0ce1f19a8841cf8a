"""The environments: gymnasium compliance, determinism, experts, human videos, splits and bad input."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.objects import PRIMITIVES, SPLITS, ObjectIdentity, hues_in, shapes_in
from envs.scene import REST_SPEED, object_name
from demos.seeds import targets_per_set, with_target
from envs.task_spec import TaskSpec, sample_task
from envs.tasks import FAMILY_CLASSES

FAMILIES = list(envs.ENV_IDS)
# CI runs a few seeds per family: enough to catch a broken expert. launch/bench_envs.py runs the full 100.
EXPERT_SEEDS = range(1000, 1008)


def run_expert(env, seed: int) -> tuple[bool, int, bool]:
    """(success, steps, whether the object nearest the effector at the end is the target)."""
    env.reset(seed=seed)
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, info = env.step(env.unwrapped.expert_action())
        steps += 1
        done = terminated or truncated
    return bool(info["is_success"]), steps, info["chosen_object"] == env.unwrapped.task.target


@pytest.mark.parametrize("env_id", list(envs.ENV_IDS.values()))
def test_check_env_passes(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=False)
    env.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_seeded_reset_reproduces_the_scene(family, make_env):
    a, b = make_env(family), envs.make(family)
    obs_a, info_a = a.reset(seed=7)
    a.reset(seed=8)  # a different scene in between must not leak into the next one
    obs_a2, _ = a.reset(seed=7)
    obs_b, info_b = b.reset(seed=7)
    for obs in (obs_a2, obs_b):
        np.testing.assert_array_equal(obs["image"], obs_a["image"])
        np.testing.assert_array_equal(obs["state"], obs_a["state"])
    assert info_a["task"] == info_b["task"]
    # the same actions give the same trajectory
    for _ in range(5):
        action = a.unwrapped.expert_action()
        np.testing.assert_array_equal(action, b.unwrapped.expert_action())
        oa, ob = a.step(action)[0], b.step(action)[0]
        np.testing.assert_array_equal(oa["image"], ob["image"])
    b.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_observation_layout(family, make_env):
    env = make_env(family)
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (envs.STATE_DIM,) and obs["state"].dtype == np.float32
    assert env.action_space.shape == (envs.ACTION_DIM,)
    assert "is_success" in info and info["is_success"] is False
    np.testing.assert_array_equal(env.render(), obs["image"])
    assert obs["image"].std() > 5  # a real picture, not a blank frame


@pytest.mark.parametrize("family", FAMILIES)
def test_expert_succeeds(family, make_env):
    env = make_env(family)
    results = [run_expert(env, seed) for seed in EXPERT_SEEDS]
    successes = sum(ok for ok, _, _ in results)
    assert successes >= len(results) - 1, f"{family} expert: {successes}/{len(results)}"
    assert all(steps == env.unwrapped.max_episode_steps for _, steps, _ in results)
    assert all(went_for_target for ok, _, went_for_target in results if ok)  # info["chosen_object"] names its choice


def test_push_expert_is_a_continuous_function_of_the_state(make_env):
    """A policy sees images and proprioception, not an expert's hidden phase: the push expert's waypoint must follow
    from where the effector, object and goal are, and change little when the effector moves a little."""
    env = make_env("push")
    env.reset(seed=3)
    family, view = env.unwrapped.family, env.unwrapped._view()
    obj, goal = view.target_position, view.arrangement.goal
    u = np.array([*(goal - obj[:2]) / np.linalg.norm(goal - obj[:2]), 0.0])
    across = np.array([-u[1], u[0], 0.0])
    behind_low = np.array([*obj[:2], 0.02]) - 0.05 * u
    # sweep the effector sideways through the lane behind the object, and down into it, in 0.5 mm steps
    sideways = [behind_low + s * across for s in np.arange(-0.08, 0.08, 5e-4)]
    downwards = [behind_low + [0, 0, h] for h in np.arange(0.1, 0.0, -5e-4)]
    for sweep in (sideways, downwards):
        waypoints = [family.expert_waypoint(dataclasses.replace(view, ee=ee)).position for ee in sweep]
        again = [family.expert_waypoint(dataclasses.replace(view, ee=ee)).position for ee in sweep]
        np.testing.assert_array_equal(waypoints, again)  # no memory: the same state gives the same waypoint
        jumps = np.linalg.norm(np.diff(waypoints, axis=0), axis=1)
        assert jumps.max() < 0.006, f"the waypoint jumps by {jumps.max():.3f} m for a 0.5 mm move of the effector"
    # and it does push: low in the lane, it aims ahead of the effector along the push line
    in_lane = np.array([*behind_low[:2], 0.02])
    assert np.dot(family.expert_waypoint(dataclasses.replace(view, ee=in_lane)).position - in_lane, u) > 0.01
    # and once the object is on the goal's centre it holds still there, wherever the push line would turn
    done = dataclasses.replace(view, ee=in_lane, arrangement=dataclasses.replace(view.arrangement, goal=obj[:2] + 0.005))
    np.testing.assert_allclose(family.expert_waypoint(done).position, in_lane)


def test_pick_place_expert_is_memoryless_and_recovers(make_env):
    """The pick_place expert's waypoint follows from the state without jumps, its gripper closes only at the grasp
    point, a gripper closed on nothing opens again, and from a premature close the expert still does the task."""
    env = make_env("pick_place")
    env.reset(seed=5)
    family, view = env.unwrapped.family, env.unwrapped._view()
    grasp = view.target_position + [0.0, 0.0, 0.005]
    sideways = [grasp + [s, 0.0, 0.0] for s in np.arange(-0.06, 0.06, 5e-4)]
    waypoints = [family.expert_waypoint(dataclasses.replace(view, ee=ee)).position for ee in sideways]
    again = [family.expert_waypoint(dataclasses.replace(view, ee=ee)).position for ee in sideways]
    np.testing.assert_array_equal(waypoints, again)
    jumps = np.linalg.norm(np.diff(waypoints, axis=0), axis=1)
    assert jumps.max() < 0.006, f"the waypoint jumps by {jumps.max():.3f} m for a 0.5 mm move of the effector"
    grips = {name: family.expert_waypoint(dataclasses.replace(view, ee=ee, finger_opening=fingers)).grip
             for name, ee, fingers in [("at the grasp point", grasp, 0.08), ("above it", grasp + [0, 0, 0.05], 0.08),
                                       ("at it, closed on nothing", grasp, 0.0)]}
    assert grips == {"at the grasp point": True, "above it": False, "at it, closed on nothing": False}
    for _ in range(6):  # close in the air, as a cloned policy did
        env.step(np.array([0.0, 0.0, 0.0, -1.0], dtype=np.float32))
    assert env.unwrapped.holding is None and env.unwrapped.privileged_view().finger_opening < 0.01
    for _ in range(env.unwrapped.max_episode_steps - 6):
        _, _, _, _, info = env.step(env.unwrapped.expert_action())
    assert info["is_success"]


@pytest.mark.parametrize("family", FAMILIES)
def test_doing_nothing_fails(family, make_env):
    env = make_env(family)
    env.reset(seed=3)
    for _ in range(env.unwrapped.max_episode_steps):
        _, _, _, truncated, info = env.step(np.zeros(4, dtype=np.float32))
    assert truncated and not info["is_success"]


@pytest.mark.parametrize("family", FAMILIES)
def test_human_video(family, make_env):
    env = make_env(family)
    env.reset(seed=11)
    frames, info = env.unwrapped.render_human_video(seed=5)
    assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[1:] == (64, 64, 3)
    assert frames.shape[0] >= 20
    assert info["task_achieved"], info
    assert not {"actions", "states", "state", "action"} & set(info)
    human = env.unwrapped.human
    assert "robot" not in human.world.bodies
    # every pixel belongs to a body of the human world (none is a robot), and the hand is in view
    _, mask = human.world.render(human.last_look.camera, 64, 64, segmentation=True)
    visible = set(np.unique(mask).tolist()) - {-1}
    assert visible <= set(human.world.bodies.values())
    assert human.world.id("hand") in visible
    # the same seed gives the same video, another seed another one
    again, _ = env.unwrapped.render_human_video(seed=5)
    np.testing.assert_array_equal(again, frames)
    other, _ = env.unwrapped.render_human_video(seed=6)
    assert other.shape != frames.shape or not np.array_equal(other, frames)


def test_objects_are_at_rest_before_the_first_frame(make_env):
    """mesh:084 lands on an edge and tips over; the human plan used to aim where it stood before it fell."""
    task = TaskSpec("reach", (ObjectIdentity("mesh:016", 0), ObjectIdentity("mesh:084", 15), ObjectIdentity("mesh:861", 21)), 1)
    env = make_env("reach")
    env.reset(seed=0, options={"task": task})
    world = env.unwrapped.world
    assert max(world.speed(object_name(i)) for i in range(3)) < REST_SPEED
    for seed in range(3):
        assert env.unwrapped.render_human_video(seed=seed, max_attempts=1)[1]["task_achieved"]


def test_human_video_moves_the_object(make_env):
    env = make_env("push")
    env.reset(seed=2)
    human = env.unwrapped
    human.render_human_video(seed=3)
    world = human.human.world
    goal = world.position("task/goal")[:2]
    target = world.position(object_name(human.task.target))[:2]
    assert np.all(np.abs(target - goal) <= 0.05)


def test_splits_are_disjoint():
    shape_sets = {s: set(shapes_in(s)) for s in SPLITS}
    hue_sets = {s: set(hues_in(s)) for s in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not shape_sets[a] & shape_sets[b]
            assert not hue_sets[a] & hue_sets[b]
    assert sum(len(v) for v in shape_sets.values()) == 1000 + len(PRIMITIVES)
    assert len(shape_sets["train"]) > 5 * len(shape_sets["test"])


@pytest.mark.parametrize("split", SPLITS)
def test_sampled_tasks_stay_in_their_split(split):
    rng = np.random.default_rng(0)
    for family in FAMILIES:
        for _ in range(20):
            task = envs.sample_task(rng, family, split)
            assert all(o.split() == split for o in task.objects)
            assert envs.TaskSpec.from_dict(task.to_dict()) == task


def test_targets_are_uniform_among_candidates():
    rng = np.random.default_rng(1)
    targets = [envs.sample_task(rng, "reach", "train").target for _ in range(600)]
    counts = np.bincount(targets, minlength=3)
    assert counts.min() > 150, counts


def test_scene_does_not_reveal_the_target(make_env):
    """Only the video says which object: the target is not placed, coloured or ordered differently."""
    env = make_env("reach")
    positions = []
    for seed in range(40):
        env.reset(seed=seed)
        t = env.unwrapped.task.target
        positions.append([env.unwrapped.world.position(object_name(i))[:2] for i in (t, (t + 1) % 3)])
    p = np.asarray(positions)
    # target and a distractor are drawn from the same distribution (means within a few cm)
    assert np.linalg.norm(p[:, 0].mean(0) - p[:, 1].mean(0)) < 0.04


@pytest.mark.parametrize("family", FAMILIES)
def test_arrangement_does_not_depend_on_the_target(family):
    """The same draw places every object, container and goal alike whichever one is the target: for push this rules
    out a scene where only one object lies at a push's distance from the goal."""
    rng = np.random.default_rng(0)
    arranger = FAMILY_CLASSES[family]()
    for seed in range(30):
        task = sample_task(rng, family, "train")
        scenes = [arranger.arrange(np.random.default_rng(seed), with_target(task, c)) for c in range(targets_per_set(family))]
        for scene in scenes[1:]:
            np.testing.assert_array_equal(scene.objects + scene.containers, scenes[0].objects + scenes[0].containers)
            np.testing.assert_array_equal(scene.goal, scenes[0].goal)  # None for the families without a goal


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"family": "fly"}, "unknown task family"),
        ({"family": "reach", "image_size": 16}, "image_size"),
        ({"family": "reach", "image_size": 512}, "image_size"),
        ({"family": "reach", "split": "holdout"}, "unknown split"),
        ({"family": "reach", "robot_visuals": "shiny"}, "robot visuals"),
        ({"family": "reach", "renderer": "vulkan"}, "unknown renderer"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    family = kwargs.pop("family")
    with pytest.raises(ValueError, match=message):
        envs.make(family, **kwargs)


def test_bad_task_specs():
    good = envs.sample_task(np.random.default_rng(0), "reach", "train").to_dict()
    with pytest.raises(ValueError, match="unknown shape"):
        envs.TaskSpec.from_dict({**good, "objects": [{"shape": "mesh:1234", "hue": 0}] + good["objects"][1:]})
    with pytest.raises(ValueError, match="exactly 3 objects"):
        envs.TaskSpec.from_dict({**good, "objects": good["objects"][:2]})
    with pytest.raises(ValueError, match="target must be"):
        envs.TaskSpec.from_dict({**good, "target": 5})
    with pytest.raises(ValueError, match="does not belong to split"):
        envs.TaskSpec.from_dict({**good, "split": "test"})
    with pytest.raises(ValueError, match="invalid task spec"):
        envs.TaskSpec.from_dict({"family": "reach"})
    with pytest.raises(ValueError, match="does not match"):
        envs.make("push", task=good)


@pytest.mark.parametrize("action", [np.zeros(3), np.zeros((4, 1)), np.array([0.0, np.nan, 0.0, 1.0]), np.array([np.inf, 0, 0, 1])])
def test_bad_actions(action, make_env):
    env = make_env("reach")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


def test_unknown_reset_option(make_env):
    env = make_env("reach")
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(seed=0, options={"arrangement": 1})


def test_fixed_task_is_used(make_env):
    env = make_env("pick_place")
    task = envs.sample_task(np.random.default_rng(3), "pick_place", "val")
    _, info = env.reset(seed=0, options={"task": task})
    assert info["task"] == task.to_dict()
    assert env.unwrapped.task == task


def test_image_size_is_configurable():
    env = envs.make("reach", image_size=32)
    obs, _ = env.reset(seed=3)
    assert obs["image"].shape == (32, 32, 3)
    frames, _ = env.unwrapped.render_human_video(seed=0)
    assert frames.shape[1:] == (32, 32, 3)
    env.close()


def test_egl_falls_back_to_tiny_renderer_without_a_gpu(monkeypatch):
    import envs.bullet

    monkeypatch.setattr(envs.bullet, "egl_available", lambda: False)
    with pytest.warns(UserWarning, match="TinyRenderer"):
        env = envs.make("reach", renderer="egl")
    assert env.unwrapped.renderer == "tiny"
    obs, _ = env.reset(seed=3)
    assert obs["image"].std() > 5
    env.close()


def test_stock_visuals_render_the_same_scene():
    low, stock = envs.make("reach"), envs.make("reach", robot_visuals="stock")
    low.reset(seed=4)
    stock.reset(seed=4)
    for _ in range(10):  # bring the gripper down into view
        action = low.unwrapped.expert_action()
        a, b = low.step(action)[0], stock.step(action)[0]
    np.testing.assert_allclose(a["state"], b["state"], atol=1e-4)
    # same scene, different robot meshes: most pixels agree, the robot's differ
    differ = np.any(a["image"] != b["image"], axis=-1).mean()
    assert 0.0 < differ < 0.5
    low.close()
    stock.close()


def test_privileged_view_needs_a_reset() -> None:
    env = envs.make("reach", image_size=32)
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.privileged_view()
    env.reset(seed=0)
    view = env.unwrapped.privileged_view()
    assert view.target_position.shape == (3,) and view.task.family == "reach"
    env.close()


def test_camera_projects_each_object_onto_its_own_pixels() -> None:
    env = envs.make("push", image_size=64)
    env.reset(seed=3)
    world = env.unwrapped.world
    _, mask = world.render(envs.core.ROBOT_CAMERA, 64, 64, segmentation=True)
    for i in range(len(env.unwrapped.task.objects)):
        rows, columns = np.nonzero(mask == world.id(object_name(i)))
        silhouette_centre = np.array([columns.mean(), rows.mean()])  # of the visible surface, a little above the centre
        projected = envs.core.ROBOT_CAMERA.project(world.position(object_name(i)), 64, 64)
        assert np.linalg.norm(projected - silhouette_centre) < 2.5, (i, projected, silhouette_centre)
    env.close()


def test_depth_observation_measures_how_far_each_object_is_along_the_camera_axis() -> None:
    """depth=true: obs["depth"] holds the camera's depth levels; at an object's pixel they give its visible surface,
    nearer than its centre or (a flat object, whose pixel may show the table just behind it) within a level and a
    pixel's slope of it; the RGB image is the one an env without depth renders."""
    env, plain = envs.make("push", image_size=64, depth=True), envs.make("push", image_size=64)
    obs, _ = env.reset(seed=3)
    assert obs["depth"].shape == (64, 64) and obs["depth"].dtype == np.uint8 and obs["depth"].min() >= 1
    assert env.observation_space.contains(obs) and "depth" not in plain.reset(seed=3)[0]
    assert np.array_equal(obs["image"], plain.reset(seed=3)[0]["image"])
    camera, world = envs.core.ROBOT_CAMERA, env.unwrapped.world
    axis = np.subtract(camera.target, camera.eye) / np.linalg.norm(np.subtract(camera.target, camera.eye))
    for i in range(len(env.unwrapped.task.objects)):
        centre = world.position(object_name(i))
        column, row = np.rint(camera.project(centre, 64, 64) - 0.5).astype(int)  # the pixel whose square holds it
        measured = envs.core.DEPTH_NEAR + (obs["depth"][row, column] - 1) * envs.core.DEPTH_STEP
        assert -0.01 <= (centre - camera.eye) @ axis - measured < 0.04, (i, measured)
    env.close(), plain.close()
