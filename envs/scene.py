"""The tabletop shared by the robot world and the human-video world: table, task objects, containers, goal."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pybullet as pb

from envs.bullet import World
from envs.objects import create_shapes, hue_rgba, object_half_height
from envs.task_spec import TaskSpec

TABLE_RGBA = (0.55, 0.45, 0.35, 1.0)
WORKSPACE_LOW = np.array([0.40, -0.19])
WORKSPACE_HIGH = np.array([0.67, 0.19])
CONTAINER_INNER = 0.065  # half of the inner side of a container, metres
CONTAINER_WALL = 0.035  # wall height
INSIDE_BELOW = CONTAINER_WALL + 0.03  # an object's centre lower than this (and over the footprint) is in the container
GOAL_RADIUS = 0.05
GOAL_RGBA = (0.95, 0.95, 0.95, 1.0)


@dataclass
class Arrangement:
    """Where the task's things stand in one episode (drawn from the episode seed)."""

    objects: list[np.ndarray]
    containers: list[np.ndarray] = field(default_factory=list)
    goal: np.ndarray | None = None


def object_name(i: int) -> str:
    return f"task/object{i}"


def container_name(i: int) -> str:
    return f"task/container{i}"


def sample_positions(rng: np.random.Generator, count: int, min_gap: float, margin: float = 0.0) -> list[np.ndarray]:
    """`count` xy positions in the workspace, pairwise at least `min_gap` apart (rejection sampling)."""
    low, high = WORKSPACE_LOW + margin, WORKSPACE_HIGH - margin
    for _ in range(1000):
        points = rng.uniform(low, high, size=(count, 2))
        d = np.linalg.norm(points[:, None] - points[None], axis=-1) + np.eye(count) * 1e9
        if d.min() >= min_gap:
            return list(points)
    raise RuntimeError(f"could not place {count} things {min_gap} m apart in the workspace")  # pragma: no cover


def build_table(world: World, rgba: tuple[float, float, float, float] = TABLE_RGBA) -> None:
    """A 1.6 m x 1.6 m table top whose surface is z = 0."""
    world.create_box("table", (0.8, 0.8, 0.02), rgba, np.array([0.5, 0.0, -0.02]))
    world.client.changeDynamics(world.id("table"), -1, lateralFriction=0.6)


def populate(world: World, task: TaskSpec, arrangement: Arrangement, goal_rgba: tuple = GOAL_RGBA) -> None:
    """Add the task's objects, containers and goal marker."""
    for i, c in enumerate(task.containers):
        add_container(world, container_name(i), hue_rgba(c.hue), arrangement.containers[i])
    if arrangement.goal is not None:
        world.create_box("task/goal", (GOAL_RADIUS, GOAL_RADIUS, 0.0005), goal_rgba,
                         np.array([*arrangement.goal, 0.0005]), collide=False)
    for i, o in enumerate(task.objects):
        collision, visual = create_shapes(world.client, o)
        z = object_half_height(o.shape) + 0.002
        world.create_body(object_name(i), collision, visual, np.array([*arrangement.objects[i], z]), mass=0.15)
        world.client.changeDynamics(world.id(object_name(i)), -1, lateralFriction=0.8, spinningFriction=0.002,
                                    rollingFriction=0.002, linearDamping=0.4, angularDamping=0.4)


def add_container(world: World, name: str, rgba: tuple, xy: np.ndarray) -> None:
    """An open box (floor and four walls) fixed to the table."""
    s, h, t = CONTAINER_INNER, CONTAINER_WALL, 0.006
    halves = [(s + t, s + t, t / 2), (t / 2, s + t, h / 2), (t / 2, s + t, h / 2), (s + t, t / 2, h / 2), (s + t, t / 2, h / 2)]
    centres = [(0, 0, t / 2), (s + t / 2, 0, h / 2), (-s - t / 2, 0, h / 2), (0, s + t / 2, h / 2), (0, -s - t / 2, h / 2)]
    c = world.client
    collision = c.createCollisionShapeArray([pb.GEOM_BOX] * 5, halfExtents=halves, collisionFramePositions=centres)
    visual = c.createVisualShapeArray([pb.GEOM_BOX] * 5, halfExtents=halves, visualFramePositions=centres, rgbaColors=[rgba] * 5)
    world.create_body(name, collision, visual, np.array([*xy, 0.0]))


SETTLE_CHUNK = 24  # physics steps between checks (0.1 s)
MAX_SETTLE_CHUNKS = 20  # give up after 2 s of simulated time
REST_SPEED = 0.01  # m/s and rad/s: a body this slow counts as at rest


def settle(world: World, task: TaskSpec) -> None:
    """Let the dropped task objects come to rest before the first frame.

    Some meshes land on an edge and tip over: a fixed short settle let them move centimetres after the first
    frame, which made the human proxy's plan (drawn from the positions at the start) miss its target.
    """
    names = [object_name(i) for i in range(len(task.objects))]
    for _ in range(MAX_SETTLE_CHUNKS):
        world.step(SETTLE_CHUNK)
        if max(world.speed(name) for name in names) < REST_SPEED:
            return


def inside_container(world: World, obj: str, container: str) -> bool:
    """The object's centre lies within the container's inner footprint and below its rim."""
    p, c = world.position(obj), world.position(container)
    return over_footprint(p, c) and p[2] < INSIDE_BELOW


def over_footprint(position: np.ndarray, container: np.ndarray) -> bool:
    """The point's x, y lie within the inner footprint of the container centred at `container` (at any height)."""
    return bool(np.all(np.abs(position[:2] - container[:2]) < CONTAINER_INNER))
