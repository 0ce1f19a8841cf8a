"""The Franka Panda: loading (low-poly or stock visuals), end-effector velocity control through IK, gripper."""

from __future__ import annotations

import hashlib
import os
import tempfile

import numpy as np
import pybullet as pb
import pybullet_data

from envs.bullet import World

ARM_JOINTS = tuple(range(7))
FINGER_JOINTS = (9, 10)
EE_LINK = 11  # panda_grasptarget: between the finger tips
HOME_JOINTS = (0.0, -0.35, 0.0, -2.3, 0.0, 1.95, 0.785)
DOWN = pb.getQuaternionFromEuler((np.pi, 0.0, 0.0))
FINGER_OPEN = 0.04
ROBOT_VISUALS = ("lowpoly", "stock")


def panda_urdf(visuals: str) -> str:
    """Path of the Panda URDF. `lowpoly` uses the collision meshes as visuals (about 10x faster to render).

    The low-poly file is written once per content into the temp folder, atomically, with absolute mesh paths.
    """
    if visuals not in ROBOT_VISUALS:
        raise ValueError(f"unknown robot visuals {visuals!r}; allowed: {', '.join(ROBOT_VISUALS)}")
    stock = os.path.join(pybullet_data.getDataPath(), "franka_panda", "panda.urdf")
    if visuals == "stock":
        return stock
    with open(stock) as f:
        text = f.read()
    meshes = os.path.join(pybullet_data.getDataPath(), "franka_panda", "meshes")
    text = text.replace("package://meshes/visual/", "package://meshes/collision/").replace("package://meshes", meshes)
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    path = os.path.join(tempfile.gettempdir(), f"oneshot_panda_lowpoly_{digest}.urdf")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return path


class Panda:
    """A fixed-base Panda whose end effector follows a position target with a fixed downward orientation."""

    def __init__(self, world: World, visuals: str = "lowpoly", base: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
        self.world = world
        c = world.client
        self.id = world.add("robot", c.loadURDF(panda_urdf(visuals), base, useFixedBase=True, flags=pb.URDF_ENABLE_CACHED_GRAPHICS_SHAPES))
        info = [c.getJointInfo(self.id, j) for j in ARM_JOINTS]
        self.lower = [i[8] for i in info]
        self.upper = [i[9] for i in info]
        self.ranges = [u - l for l, u in zip(self.lower, self.upper)]
        for link in (*FINGER_JOINTS, 8):
            c.changeDynamics(self.id, link, lateralFriction=1.0, spinningFriction=0.01)
        self.target = np.zeros(3)
        self.gripper_closed = False

    def reset(self, ee_position: np.ndarray) -> None:
        """Teleport to a configuration whose end effector is at `ee_position`, gripper open."""
        c = self.world.client
        for j, q in zip(ARM_JOINTS, HOME_JOINTS):
            c.resetJointState(self.id, j, q)
        for _ in range(3):  # a few IK passes from home converge to sub-millimetre
            for j, q in zip(ARM_JOINTS, self._ik(ee_position)):
                c.resetJointState(self.id, j, q)
        for j in FINGER_JOINTS:
            c.resetJointState(self.id, j, FINGER_OPEN)
        self.target = np.asarray(ee_position, dtype=np.float64).copy()
        self.gripper_closed = False
        self._command()

    def _ik(self, position: np.ndarray) -> list[float]:
        q = self.world.client.calculateInverseKinematics(
            self.id, EE_LINK, list(position), DOWN,
            lowerLimits=self.lower, upperLimits=self.upper, jointRanges=self.ranges, restPoses=list(HOME_JOINTS),
            maxNumIterations=30, residualThreshold=1e-4,
        )
        return list(q[:7])

    def command(self, target: np.ndarray, close_gripper: bool) -> None:
        """Set the end-effector position target and the gripper state; motors track them during physics steps."""
        self.target = np.asarray(target, dtype=np.float64).copy()
        self.gripper_closed = close_gripper
        self._command()

    def _command(self) -> None:
        c = self.world.client
        c.setJointMotorControlArray(self.id, ARM_JOINTS, pb.POSITION_CONTROL, targetPositions=self._ik(self.target),
                                    forces=[87.0] * 4 + [12.0] * 3, positionGains=[0.3] * 7)
        finger = 0.0 if self.gripper_closed else FINGER_OPEN
        c.setJointMotorControlArray(self.id, FINGER_JOINTS, pb.POSITION_CONTROL, targetPositions=[finger, finger], forces=[40.0, 40.0])

    def ee_position(self) -> np.ndarray:
        return np.asarray(self.world.client.getLinkState(self.id, EE_LINK, computeForwardKinematics=True)[4])

    def finger_opening(self) -> float:
        c = self.world.client
        return float(sum(c.getJointState(self.id, j)[0] for j in FINGER_JOINTS))

    def joint_positions(self) -> np.ndarray:
        return np.asarray([s[0] for s in self.world.client.getJointStates(self.id, ARM_JOINTS)])

    def state(self) -> np.ndarray:
        """Proprioception (11,): end-effector position, gripper opening, 7 arm joint positions."""
        return np.concatenate([self.ee_position(), [self.finger_opening()], self.joint_positions()]).astype(np.float32)

    def touching(self, body: int) -> bool:
        """Both fingers in contact with `body` (what the grasp assist waits for)."""
        c = self.world.client
        return all(len(c.getContactPoints(self.id, body, j, -1)) > 0 for j in FINGER_JOINTS)
