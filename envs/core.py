"""`OneShotEnv`: a Panda and a task family composed into one gymnasium environment."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pybullet as pb
from gymnasium import spaces

from envs.bullet import Camera, World
from envs.human import HumanScene
from envs.objects import check_split
from envs.robot import EE_LINK, Panda
from envs.scene import Arrangement, build_table, object_name, populate, settle
from envs.task_spec import FAMILIES, TaskSpec, sample_task
from envs.tasks import FAMILY_CLASSES
from envs.tasks.base import EpisodeView

IMAGE_SIZE_RANGE = (32, 256)
STATE_DIM = 11
ACTION_DIM = 4
SUBSTEPS = 24  # 240 Hz physics, 10 Hz control
MAX_STEP = 0.03  # metres the end-effector target moves per step at |action| = 1
GRASP_WINDOW = 4  # steps after a close command during which touching fingers grasp
EE_LOW = np.array([0.25, -0.35, 0.012])
EE_HIGH = np.array([0.80, 0.35, 0.35])
ROBOT_CAMERA = Camera(eye=(0.88, 0.0, 0.56), target=(0.53, 0.0, 0.0), fov_deg=36.0)
# The robot camera's depth as one byte per pixel: level k >= 1 is DEPTH_NEAR + (k - 1) * DEPTH_STEP metres along the
# camera's axis, clipped to 1..255 (0.30-1.32 m: the table in view lies at 0.5-1.0 m); level 0 is never produced, so
# a model can read it as "no depth" (a human video has none).
DEPTH_NEAR = 0.30
DEPTH_STEP = 0.004


def encode_depth(metres: np.ndarray) -> np.ndarray:
    """Depth along the camera's axis in metres -> uint8 levels (DEPTH_NEAR, DEPTH_STEP)."""
    return np.clip(np.rint((metres - DEPTH_NEAR) / DEPTH_STEP) + 1, 1, 255).astype(np.uint8)


class OneShotEnv(gym.Env):
    """A tabletop task with a Franka Panda, seen from a fixed robot camera.

    Constructor keywords (pass them to `gym.make`):
      family: "reach" | "push" | "pick_place" (set by the registered id)
      split: which object identities tasks are drawn from: "train" | "val" | "test" | "test_ood"
      task: a fixed `TaskSpec` (or its dict) for every episode; by default a task is drawn per reset
      image_size: side of the square camera image, 32-256 (default 64)
      robot_visuals: "lowpoly" (default, fast) | "stock" (the original meshes)
      renderer: "tiny" (default) | "egl" (GPU; falls back to tiny with a warning)
      depth: also observe the robot camera's depth, `obs["depth"]` uint8 (H, W) (`encode_depth`; default False)
    `reset(options={"task": TaskSpec | dict})` sets the task for that episode (it wins over `task=`).
    The arrangement of objects is always drawn from the reset seed through `np_random`.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        family: str = "reach",
        split: str = "train",
        task: TaskSpec | dict | None = None,
        image_size: int = 64,
        robot_visuals: str = "lowpoly",
        renderer: str = "tiny",
        render_mode: str | None = "rgb_array",
        depth: bool = False,
    ) -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown task family {family!r}; allowed: {', '.join(FAMILIES)}")
        check_split(split)
        if not isinstance(image_size, (int, np.integer)) or not IMAGE_SIZE_RANGE[0] <= image_size <= IMAGE_SIZE_RANGE[1]:
            raise ValueError(f"image_size must be an integer in [{IMAGE_SIZE_RANGE[0]}, {IMAGE_SIZE_RANGE[1]}], got {image_size!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.family = FAMILY_CLASSES[family]()
        self.split = split
        self.fixed_task = self._as_task(task) if task is not None else None
        self.image_size = int(image_size)
        self.render_mode = render_mode
        self.renderer_requested = renderer
        self.world = World(renderer)
        self.robot_visuals = robot_visuals
        self.robot = self._build_world()
        self.human: HumanScene | None = None
        self.depth = bool(depth)
        self.observation_space = spaces.Dict({
            "image": spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8),
            "state": spaces.Box(-4.0, 4.0, (STATE_DIM,), np.float32),  # metres and radians: all well inside ±4
            **({"depth": spaces.Box(1, 255, (self.image_size, self.image_size), np.uint8)} if self.depth else {}),
        })
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self.task: TaskSpec | None = None
        self.arrangement: Arrangement | None = None
        self.holding: int | None = None
        self._grasp_constraint: int | None = None
        self._closed_steps = 0
        self._history: list[bool] = []
        self._frame: np.ndarray | None = None

    @property
    def renderer(self) -> str:
        """The renderer in use (after any fallback): recorded in datasets, since renderers differ slightly."""
        return self.world.renderer

    def _as_task(self, task: TaskSpec | dict) -> TaskSpec:
        spec = task if isinstance(task, TaskSpec) else TaskSpec.from_dict(task)
        if spec.family != self.family.name:
            raise ValueError(f"task family {spec.family!r} does not match this environment's {self.family.name!r}")
        return spec

    # ----- gymnasium API ----------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - {"task"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; allowed: 'task'")
        if options.get("task") is not None:
            self.task = self._as_task(options["task"])
        else:
            self.task = self.fixed_task or sample_task(self.np_random, self.family.name, self.split)
        self._release()  # before the world is rebuilt: the old constraint id is only valid in the old world
        self.robot = self._build_world()
        self.arrangement = self.family.arrange(self.np_random, self.task)
        populate(self.world, self.task, self.arrangement)
        start = np.array([0.45, 0.0, 0.22]) + self.np_random.uniform(-0.03, 0.03, size=3)
        self.robot.reset(start)
        settle(self.world, self.task)
        self.family.reset_expert()
        self._history = []
        return self._observe(), self._info()

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        if self.task is None:
            raise RuntimeError("call reset() before step()")
        a = self._check_action(action)
        target = np.clip(self.robot.target + a[:3] * MAX_STEP, EE_LOW, EE_HIGH)
        self.robot.command(target, close_gripper=bool(a[3] <= 0.0))
        self.world.step(SUBSTEPS)
        self._update_grasp_assist()
        self._history.append(self.family.achieved(self.world, self.task, self.arrangement, self.robot.ee_position(), self.holding))
        success = self.family.success(self._history)
        return self._observe(), float(success), False, False, self._info()

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        if self._frame is None:
            raise RuntimeError("call reset() before render()")
        return self._frame

    def close(self) -> None:
        if self.human is not None:
            self.human.close()
            self.human = None
        if self.world.client is not None:
            self.world.close()

    # ----- extras -----------------------------------------------------------------------------------------
    def expert_action(self) -> np.ndarray:
        """The scripted expert's action for the current state (privileged: it knows the target)."""
        if self.task is None:
            raise RuntimeError("call reset() before expert_action()")
        waypoint = self.family.expert_waypoint(self._view())
        # aim from the commanded target, not the measured position, so the arm does not creep under load
        velocity = np.clip((waypoint.position - self.robot.target) / MAX_STEP, -1.0, 1.0)
        return np.array([*velocity, -1.0 if waypoint.grip else 1.0], dtype=np.float32)

    def render_human_video(self, seed: int | None = None, max_attempts: int = 5) -> tuple[np.ndarray, dict]:
        """A human-proxy video of the current task in a fresh arrangement: frames uint8 (T, H, W, 3) and info.

        Randomness comes from `seed` when given, else from the env's `np_random`. An execution that fails in
        the simulator is redrawn (up to `max_attempts`); `info["task_achieved"]` says whether the returned one
        did the task, `info["attempts"]` how many were drawn. No actions and no robot state are produced.
        """
        if self.task is None:
            raise RuntimeError("call reset() before render_human_video()")
        rng = np.random.default_rng(seed) if seed is not None else self.np_random
        if self.human is None:
            self.human = HumanScene(self.renderer_requested, self.image_size, self.image_size)
        for attempt in range(1, max_attempts + 1):
            arrangement = self.family.arrange(rng, self.task)
            frames, info = self.human.record(rng, self.family, self.task, arrangement)
            if info["task_achieved"]:
                break
        info["attempts"] = attempt
        return frames, info

    def privileged_view(self) -> EpisodeView:
        """What the expert reads (object positions, arrangement, effector): for diagnostics, never a policy's input."""
        if self.task is None:
            raise RuntimeError("call reset() before privileged_view()")
        return self._view()

    @property
    def max_episode_steps(self) -> int:
        return self.family.max_steps

    # ----- internals --------------------------------------------------------------------------------------
    def _build_world(self) -> Panda:
        self.world.clear()
        build_table(self.world)
        return Panda(self.world, self.robot_visuals)

    def _check_action(self, action: np.ndarray) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},) = (vx, vy, vz, gripper), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {a.tolist()}")
        return np.clip(a, -1.0, 1.0)

    def _observe(self) -> dict[str, np.ndarray]:
        self._frame, depth, _ = self.world.capture(ROBOT_CAMERA, self.image_size, self.image_size, depth=self.depth)
        depth_levels = {} if depth is None else {"depth": encode_depth(depth)}
        return {"image": self._frame, "state": self.robot.state(), **depth_levels}

    def _info(self) -> dict[str, Any]:
        return {
            "is_success": self.family.success(self._history),
            "task": self.task.to_dict(),
            # the candidate the behaviour went for (TaskFamily.chosen_object): a policy that ignores the video picks
            # the target in about 1 / len(task.objects) episodes
            "chosen_object": self.family.chosen_object(self._view()),
        }

    def _view(self) -> EpisodeView:
        return EpisodeView(self.world, self.task, self.arrangement, self.robot.ee_position(), self.holding,
                           self.robot.finger_opening())

    def _update_grasp_assist(self) -> None:
        """Fingers that close on an object hold it with a fixed constraint (a grasp assist, like ravens' suction).

        Only a closing gripper grasps (the first GRASP_WINDOW steps after a close command): closed fingers that
        merely push against an object do not pick it up.
        """
        self._closed_steps = self._closed_steps + 1 if self.robot.gripper_closed else 0
        if 0 < self._closed_steps <= GRASP_WINDOW and self.holding is None:
            for i in range(len(self.task.objects)):
                body = self.world.id(object_name(i))
                if self.robot.touching(body):
                    c = self.world.client
                    hand = c.getLinkState(self.robot.id, EE_LINK)
                    obj_pos, obj_orn = c.getBasePositionAndOrientation(body)
                    inv_pos, inv_orn = c.invertTransform(hand[4], hand[5])
                    rel_pos, rel_orn = c.multiplyTransforms(inv_pos, inv_orn, obj_pos, obj_orn)
                    self._grasp_constraint = c.createConstraint(self.robot.id, EE_LINK, body, -1, pb.JOINT_FIXED, [0, 0, 0],
                                                                rel_pos, [0, 0, 0], rel_orn, [0, 0, 0, 1])
                    self.holding = i
                    break
        elif not self.robot.gripper_closed and self.holding is not None:
            self._release()

    def _release(self) -> None:
        if self._grasp_constraint is not None:
            self.world.client.removeConstraint(self._grasp_constraint)
        self._grasp_constraint = None
        self.holding = None
        self._closed_steps = 0
