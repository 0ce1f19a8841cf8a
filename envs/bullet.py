"""A thin typed wrapper around one PyBullet client that names bodies instead of passing raw ids.

Every environment owns its own `World` (DIRECT mode, never the global client), so several
environments can live in one process and nothing leaks between them.
"""

from __future__ import annotations

import functools
import os
import pkgutil
import warnings
from dataclasses import dataclass

import numpy as np
import pybullet as pb
import pybullet_data

PHYSICS_HZ = 240
RENDERERS = ("tiny", "egl")


@dataclass(frozen=True)
class Camera:
    """A pinhole camera looking from `eye` at `target`; `light_direction` and colour set the shading."""

    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    fov_deg: float = 50.0
    light_direction: tuple[float, float, float] = (0.5, 0.3, 1.0)
    light_color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ambient: float = 0.6
    diffuse: float = 0.5
    NEAR = 0.05  # metres: the clipping planes of the projection and its depth buffer (class constants, not fields)
    FAR = 5.0

    def view_matrix(self) -> list[float]:
        return pb.computeViewMatrix(self.eye, self.target, (0.0, 0.0, 1.0))

    def projection_matrix(self, width: int, height: int) -> list[float]:
        return pb.computeProjectionMatrixFOV(self.fov_deg, width / height, self.NEAR, self.FAR)

    def linear_depth(self, buffer: np.ndarray) -> np.ndarray:
        """An OpenGL depth buffer (values in [0, 1]) -> each pixel's distance along the camera's axis, in metres."""
        return (self.FAR * self.NEAR / (self.FAR - (self.FAR - self.NEAR) * buffer)).astype(np.float32)

    def clip_matrix(self, width: int, height: int) -> np.ndarray:
        """The 4x4 (row-major) map from homogeneous world points to clip coordinates: projection @ view."""
        view = np.asarray(self.view_matrix()).reshape(4, 4).T  # pybullet's matrices are column-major
        return np.asarray(self.projection_matrix(width, height)).reshape(4, 4).T @ view

    def project(self, point: np.ndarray, width: int, height: int) -> np.ndarray:
        """The (column, row) in pixels, from the image's top left, where a world point appears in this camera's image."""
        clip = self.clip_matrix(width, height) @ np.r_[np.asarray(point, float), 1.0]
        x, y = clip[:2] / clip[3]
        return np.array([(x + 1) / 2 * width, (1 - y) / 2 * height])


class BulletClient:
    """One DIRECT-mode physics client; every pybullet function called through it gets this client's id.

    (pybullet_utils.bullet_client does the same but prints a stray "argv[0]=" line on every connect.)
    """

    def __init__(self) -> None:
        self.id = pb.connect(pb.DIRECT)

    def __getattr__(self, name: str):
        attribute = getattr(pb, name)
        if callable(attribute):
            return functools.partial(attribute, physicsClientId=self.id)
        return attribute

    def disconnect(self) -> None:
        pb.disconnect(physicsClientId=self.id)


def egl_available() -> bool:
    """EGL only pays off on a GPU: without one PyBullet's EGL plugin runs on software OpenGL and is slower."""
    return any(os.path.exists(f"/dev/nvidia{i}") for i in range(8)) or os.path.exists("/dev/dri/renderD128")


class World:
    """One PyBullet physics client with named bodies."""

    def __init__(self, renderer: str = "tiny") -> None:
        if renderer not in RENDERERS:
            raise ValueError(f"unknown renderer {renderer!r}; allowed: {', '.join(RENDERERS)}")
        self.client = BulletClient()
        self.client.setAdditionalSearchPath(pybullet_data.getDataPath())
        self.renderer = self._start_renderer(renderer)
        self.bodies: dict[str, int] = {}
        self.clear()

    def clear(self) -> None:
        """Remove every body and constraint and reset the physics state.

        Episodes rebuild their world from scratch (about 25 ms): removing and re-adding only the task's bodies
        leaves solver caches behind, and then the same seed gives trajectories that differ in the fifth digit.
        """
        self.client.resetSimulation()
        self.client.setGravity(0.0, 0.0, -9.81)
        self.client.setTimeStep(1.0 / PHYSICS_HZ)
        self.bodies.clear()

    def _start_renderer(self, renderer: str) -> str:
        """Load the EGL plugin before any body (loaded after, it renders blank); fall back to TinyRenderer."""
        if renderer == "tiny":
            return "tiny"
        egl = pkgutil.get_loader("eglRenderer")
        if egl is None or not egl_available():
            warnings.warn("EGL rendering needs a GPU and PyBullet's eglRenderer plugin; using TinyRenderer", stacklevel=3)
            return "tiny"
        if self.client.loadPlugin(egl.get_filename(), "_eglRendererPlugin") < 0:
            warnings.warn("PyBullet's EGL plugin failed to load; using TinyRenderer", stacklevel=3)
            return "tiny"
        return "egl"

    # ----- bodies -----------------------------------------------------------------------------------------
    def add(self, name: str, body_id: int) -> int:
        if name in self.bodies:
            raise ValueError(f"a body named {name!r} already exists")
        self.bodies[name] = body_id
        return body_id

    def id(self, name: str) -> int:
        return self.bodies[name]

    def create_body(
        self,
        name: str,
        collision: int,
        visual: int,
        position: np.ndarray,
        orientation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0),
        mass: float = 0.0,
    ) -> int:
        body = self.client.createMultiBody(
            baseMass=mass,
            baseCollisionShapeIndex=collision,
            baseVisualShapeIndex=visual,
            basePosition=list(position),
            baseOrientation=list(orientation),
        )
        return self.add(name, body)

    def create_box(
        self,
        name: str,
        half_extents: tuple[float, float, float],
        rgba: tuple[float, float, float, float],
        position: np.ndarray,
        mass: float = 0.0,
        collide: bool = True,
    ) -> int:
        visual = self.client.createVisualShape(pb.GEOM_BOX, halfExtents=half_extents, rgbaColor=rgba)
        collision = self.client.createCollisionShape(pb.GEOM_BOX, halfExtents=half_extents) if collide else -1
        return self.create_body(name, collision, visual, position, mass=mass)

    def set_pose(self, name: str, position: np.ndarray, orientation: tuple[float, ...] = (0.0, 0.0, 0.0, 1.0)) -> None:
        self.client.resetBasePositionAndOrientation(self.bodies[name], list(position), list(orientation))

    def position(self, name: str) -> np.ndarray:
        return np.asarray(self.client.getBasePositionAndOrientation(self.bodies[name])[0], dtype=np.float64)

    def orientation(self, name: str) -> np.ndarray:
        return np.asarray(self.client.getBasePositionAndOrientation(self.bodies[name])[1], dtype=np.float64)

    def speed(self, name: str) -> float:
        """The larger of the body's linear (m/s) and angular (rad/s) speed."""
        linear, angular = self.client.getBaseVelocity(self.id(name))
        return float(max(np.linalg.norm(linear), np.linalg.norm(angular)))

    def set_color(self, name: str, rgba: tuple[float, float, float, float], link: int = -1) -> None:
        self.client.changeVisualShape(self.bodies[name], link, rgbaColor=list(rgba))

    def in_contact(self, a: str, b: str) -> bool:
        return len(self.client.getContactPoints(self.bodies[a], self.bodies[b])) > 0

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.client.stepSimulation()

    # ----- rendering --------------------------------------------------------------------------------------
    def render(self, camera: Camera, width: int, height: int, segmentation: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """RGB uint8 (H, W, 3) and, when asked, the body-id segmentation mask (H, W)."""
        rgb, _, mask = self.capture(camera, width, height, segmentation=segmentation)
        return rgb, mask

    def capture(self, camera: Camera, width: int, height: int, segmentation: bool = False,
                depth: bool = False) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """RGB uint8 (H, W, 3) and, when asked, the depth along the camera's axis in metres float32 (H, W) (what an
        RGB-D camera measures; the renderer fills its buffer with every image, and converting it adds 1-5% to a
        64x64 render) and the segmentation mask (H, W)."""
        flags = 0 if segmentation else pb.ER_NO_SEGMENTATION_MASK
        renderer = pb.ER_BULLET_HARDWARE_OPENGL if self.renderer == "egl" else pb.ER_TINY_RENDERER
        _, _, rgba, depth_buffer, seg = self.client.getCameraImage(
            width,
            height,
            viewMatrix=camera.view_matrix(),
            projectionMatrix=camera.projection_matrix(width, height),
            renderer=renderer,
            shadow=0,  # shadow=1 would stay on for later calls; pass it explicitly every time
            lightDirection=list(camera.light_direction),
            lightColor=list(camera.light_color),
            lightAmbientCoeff=camera.ambient,
            lightDiffuseCoeff=camera.diffuse,
            lightSpecularCoeff=0.05,
            flags=flags,
        )
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3].copy()
        mask = np.asarray(seg, dtype=np.int32).reshape(height, width) if segmentation else None  # body id, -1 = none
        metres = None
        if depth:
            metres = camera.linear_depth(np.asarray(depth_buffer, dtype=np.float64).reshape(height, width))
        return rgb, metres, mask

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.disconnect()
            except pb.error:
                pass
            self.client = None  # type: ignore[assignment]
