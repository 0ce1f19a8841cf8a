"""The human-video proxy: the same task done by a human-like arm and hand, the robot absent from the scene.

It lives in a world of its own (no robot is ever loaded there), seen from another camera, under other light,
on another table colour. The hand is a body of boxes and capsules driven by a constraint, so it really pushes
and carries objects; forearm and upper arm are visual capsules from the wrist to a shoulder out of the frame.
Its path is a minimum-jerk interpolation through the family's waypoints with a random sideways bow and
random segment durations: smooth and varied, not the robot expert's path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet as pb

from envs.bullet import Camera, World
from envs.scene import Arrangement, build_table, object_name, populate, settle
from envs.task_spec import TaskSpec
from envs.tasks.base import TaskFamily, Waypoint

SKIN_TONES = ((0.98, 0.84, 0.72), (0.89, 0.70, 0.55), (0.76, 0.57, 0.42), (0.58, 0.40, 0.27), (0.42, 0.28, 0.18), (0.30, 0.20, 0.13))
SUBSTEPS = 24  # physics steps per video frame (10 frames/s, like the robot's control rate)
ARM_SEGMENT = 0.3  # metres: length of the forearm and of the upper arm capsules
FINGER_TIP = np.array([0.0, 0.0, -0.045])  # from the hand body's origin to the finger tips (the effector point)


@dataclass(frozen=True)
class HumanLook:
    """Everything that makes the video look unlike the robot's camera view."""

    camera: Camera
    skin: tuple[float, float, float]
    sleeve: tuple[float, float, float]
    table: tuple[float, float, float]
    shoulder: np.ndarray


def sample_look(rng: np.random.Generator) -> HumanLook:
    azimuth = rng.uniform(-2.2, -0.9)  # seen from the side/front-left, never from the robot's camera
    distance, height = rng.uniform(0.32, 0.42), rng.uniform(0.38, 0.5)
    centre = np.array([0.53, 0.0, 0.0])
    eye = centre + [distance * np.cos(azimuth), distance * np.sin(azimuth), height]
    light = (rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.6, 1.2))
    tint = tuple(float(x) for x in rng.uniform(0.85, 1.0, size=3))
    camera = Camera(eye=tuple(eye), target=tuple(centre + rng.normal(0, 0.02, 3)), fov_deg=float(rng.uniform(40, 46)),
                    light_direction=light, light_color=tint, ambient=float(rng.uniform(0.45, 0.7)), diffuse=float(rng.uniform(0.35, 0.6)))
    shoulder_angle = azimuth + np.pi + rng.uniform(-0.5, 0.5)  # the person stands across the table from the camera
    shoulder = centre + [0.75 * np.cos(shoulder_angle), 0.75 * np.sin(shoulder_angle), 0.45]
    skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
    return HumanLook(camera=camera, skin=skin, sleeve=tuple(float(x) for x in rng.uniform(0.1, 0.9, 3)),
                     table=tuple(float(x) for x in rng.uniform(0.25, 0.8, 3)), shoulder=shoulder)


def min_jerk(s: np.ndarray) -> np.ndarray:
    return 10 * s**3 - 15 * s**4 + 6 * s**5


def hand_path(rng: np.random.Generator, start: np.ndarray, plan: list[Waypoint]) -> list[tuple[np.ndarray, bool]]:
    """Per-frame (finger-tip position, grip) through the waypoints: minimum jerk with a random bow per segment."""
    frames: list[tuple[np.ndarray, bool]] = []
    here = start
    for wp in plan:
        s = min_jerk(np.arange(1, wp.frames + 1) / wp.frames)
        bow = rng.normal(0, 0.025, 3) * np.array([1, 1, 0.5]) if np.linalg.norm(wp.position - here) > 0.05 else np.zeros(3)
        for si in s:
            frames.append((here + si * (wp.position - here) + np.sin(np.pi * si) * bow, wp.grip))
        here = wp.position
    return frames


class HumanScene:
    """A robot-free world that renders human-proxy videos of tasks."""

    def __init__(self, renderer: str, width: int, height: int) -> None:
        self.world = World(renderer)
        self.width, self.height = width, height
        self.last_look: HumanLook | None = None

    def _build(self) -> None:
        """A fresh world for every video, so that a seed always gives the same video (see World.clear)."""
        self.world.clear()
        build_table(self.world)
        self.world.create_box("backdrop", (0.02, 1.5, 1.0), (0.7, 0.7, 0.7, 1.0), np.array([1.6, 0.0, 0.5]), collide=False)
        self._build_hand()

    def _build_hand(self) -> None:
        c = self.world.client
        # a palm, four fingers side by side along its front edge and a thumb on its side; fingers point down (-z)
        halves = [(0.04, 0.03, 0.01)] + [(0.008, 0.008, 0.022)] * 4 + [(0.008, 0.008, 0.018)]
        centres = [(0.0, 0.0, 0.0)] + [(x, 0.022, -0.03) for x in (-0.03, -0.01, 0.01, 0.03)] + [(-0.045, -0.015, -0.02)]
        collision = c.createCollisionShapeArray([pb.GEOM_BOX] * 6, halfExtents=halves, collisionFramePositions=centres)
        visual = c.createVisualShapeArray([pb.GEOM_BOX] * 6, halfExtents=halves, visualFramePositions=centres)
        self.world.create_body("hand", collision, visual, np.array([0.5, 0.0, 0.5]), mass=1.0)
        self.hand_constraint = c.createConstraint(self.world.id("hand"), -1, -1, -1, pb.JOINT_FIXED, [0, 0, 0], [0, 0, 0], [0.5, 0.0, 0.5])
        for name, radius in (("forearm", 0.03), ("upper_arm", 0.038)):
            v = c.createVisualShape(pb.GEOM_CAPSULE, radius=radius, length=ARM_SEGMENT)
            self.world.create_body(name, -1, v, np.array([0.0, 0.0, 2.0]))

    def record(self, rng: np.random.Generator, family: TaskFamily, task: TaskSpec, arrangement: Arrangement) -> tuple[np.ndarray, dict]:
        """Frames (T, H, W, 3) of one human execution and whether the task was achieved in the simulator."""
        look = self.last_look = sample_look(rng)
        self._build()
        self._dress(look)
        populate(self.world, task, arrangement)
        settle(self.world, task)
        start = look.shoulder + 0.55 * (np.array([0.53, 0.0, 0.12]) - look.shoulder)
        self._move_hand(start, teleport=True)
        grasp: int | None = None
        frames, history = [], []
        for tip, grip in hand_path(rng, start, family.human_plan(rng, self.world, task, arrangement)):
            grasp = self._update_grasp(task, grip, grasp)
            self._move_hand(tip)
            self.world.step(SUBSTEPS)
            self._place_arm(look.shoulder)
            tip_now = self.world.position("hand") + FINGER_TIP
            history.append(family.achieved(self.world, task, arrangement, tip_now, grasp))
            frames.append(self.world.render(look.camera, self.width, self.height)[0])
        info = {"task_achieved": family.success(history), "num_frames": len(frames), "camera_eye": list(look.camera.eye)}
        return np.stack(frames), info

    def _dress(self, look: HumanLook) -> None:
        self.world.set_color("table", (*look.table, 1.0))
        self.world.set_color("hand", (*look.skin, 1.0))
        self.world.set_color("forearm", (*look.skin, 1.0))
        self.world.set_color("upper_arm", (*look.sleeve, 1.0))

    def _move_hand(self, tip: np.ndarray, teleport: bool = False) -> None:
        origin = tip - FINGER_TIP
        if teleport:
            self.world.set_pose("hand", origin)
        self.world.client.changeConstraint(self.hand_constraint, list(origin), maxForce=300.0)

    def _update_grasp(self, task: TaskSpec, grip: bool, grasp: int | None) -> int | None:
        """The human holds the target when its plan grips and the hand is at the object; lets go otherwise."""
        c = self.world.client
        if grip and grasp is None:
            obj = self.world.id(object_name(task.target))
            hand_pos = self.world.position("hand")
            offset = self.world.position(object_name(task.target)) - hand_pos
            if np.linalg.norm(offset) < 0.09:
                return c.createConstraint(self.world.id("hand"), -1, obj, -1, pb.JOINT_FIXED, [0, 0, 0], list(offset), [0, 0, 0])
        if not grip and grasp is not None:
            c.removeConstraint(grasp)
            return None
        return grasp

    def _place_arm(self, shoulder: np.ndarray) -> None:
        """Forearm from the wrist, upper arm to the shoulder, with the elbow bent upward."""
        wrist = self.world.position("hand") + [0, 0, 0.02]
        reach = np.linalg.norm(shoulder - wrist)
        bend = np.sqrt(max(ARM_SEGMENT**2 - (min(reach, 2 * ARM_SEGMENT) / 2) ** 2, 0.0))
        elbow = (wrist + shoulder) / 2 + [0, 0, bend]
        for name, a, b in (("forearm", wrist, elbow), ("upper_arm", elbow, shoulder)):
            self.world.set_pose(name, (a + b) / 2, _z_towards(b - a))

    def close(self) -> None:
        self.world.close()


def _z_towards(direction: np.ndarray) -> tuple[float, float, float, float]:
    """Quaternion turning +z onto `direction` (capsules are built along z)."""
    d = direction / max(float(np.linalg.norm(direction)), 1e-9)
    axis = np.cross([0.0, 0.0, 1.0], d)
    s = float(np.linalg.norm(axis))
    if s < 1e-9:
        return (0.0, 0.0, 0.0, 1.0)
    angle = float(np.arctan2(s, d[2]))
    return tuple(float(x) for x in (*(axis / s * np.sin(angle / 2)), np.cos(angle / 2)))
