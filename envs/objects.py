"""Object identities (shape x colour), the rule that splits them, and how a shape becomes a body.

The split rule (documented in the README, tested in tests/test_envs_splits.py):
- Shapes: the 1000 meshes of `pybullet_data/random_urdfs` (`mesh:000` ... `mesh:999`) plus the primitives
  `box` and `cylinder`. Mesh `k` goes to train when k % 10 < 7, val when k % 10 == 7, test when
  k % 10 == 8 and `test_ood` (held out for extrapolation studies) when k % 10 == 9. Primitives are train shapes.
- Colours: 36 hues 10 degrees apart (fixed saturation and value). Hues 300-350 degrees (bins 30-35) are
  `test_ood` only; among bins 0-29, bin % 5 == 3 is val, bin % 5 == 4 is test, the rest train.
- An identity belongs to a split when both its shape and its colour do, so splits are disjoint in identity:
  every test object has a shape *and* a colour never seen in training.
"""

from __future__ import annotations

import colorsys
import functools
import os
from dataclasses import dataclass

import numpy as np
import pybullet as pb
import pybullet_data

SPLITS = ("train", "val", "test", "test_ood")
PRIMITIVES = ("box", "cylinder")
NUM_MESHES = 1000
NUM_HUES = 36
OOD_FIRST_HUE = 30
OBJECT_SIZE = 0.05  # metres: the side of the square with the area of an object's two largest extents
MAX_EXTENT = 0.07  # metres: no object is longer than this (the gripper opens to 8 cm)


def shape_split(shape: str) -> str:
    if shape in PRIMITIVES:
        return "train"
    index = mesh_index(shape)
    return {7: "val", 8: "test", 9: "test_ood"}.get(index % 10, "train")


def colour_split(hue_bin: int) -> str:
    if not 0 <= hue_bin < NUM_HUES:
        raise ValueError(f"colour must be a hue bin in [0, {NUM_HUES}), got {hue_bin}")
    if hue_bin >= OOD_FIRST_HUE:
        return "test_ood"
    return {3: "val", 4: "test"}.get(hue_bin % 5, "train")


def mesh_index(shape: str) -> int:
    if not shape.startswith("mesh:") or not shape[5:].isdigit() or not 0 <= int(shape[5:]) < NUM_MESHES:
        raise ValueError(f"unknown shape {shape!r}: allowed are {', '.join(PRIMITIVES)} or mesh:000 ... mesh:{NUM_MESHES - 1}")
    return int(shape[5:])


def validate_shape(shape: str) -> None:
    if shape not in PRIMITIVES:
        mesh_index(shape)


@functools.lru_cache(maxsize=None)
def shapes_in(split: str) -> tuple[str, ...]:
    check_split(split)
    meshes = [f"mesh:{k:03d}" for k in range(NUM_MESHES)]
    return tuple(s for s in (*PRIMITIVES, *meshes) if shape_split(s) == split)


@functools.lru_cache(maxsize=None)
def hues_in(split: str) -> tuple[int, ...]:
    check_split(split)
    return tuple(h for h in range(NUM_HUES) if colour_split(h) == split)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")


def hue_rgba(hue_bin: int) -> tuple[float, float, float, float]:
    colour_split(hue_bin)  # validates the range
    r, g, b = colorsys.hsv_to_rgb(hue_bin / NUM_HUES, 0.85, 0.9)
    return (r, g, b, 1.0)


@dataclass(frozen=True)
class ObjectIdentity:
    """What an object looks like: a shape name and a hue bin."""

    shape: str
    hue: int

    def split(self) -> str | None:
        """The split this identity belongs to, or None when its shape and colour disagree."""
        a, b = shape_split(self.shape), colour_split(self.hue)
        return a if a == b else None

    def to_dict(self) -> dict:
        return {"shape": self.shape, "hue": self.hue}

    @staticmethod
    def from_dict(d: dict) -> "ObjectIdentity":
        return ObjectIdentity(shape=str(d["shape"]), hue=int(d["hue"]))


def sample_identities(rng: np.random.Generator, split: str, count: int, min_hue_gap: int = 2) -> tuple[ObjectIdentity, ...]:
    """`count` identities of one split with distinct shapes and hues at least `min_hue_gap` bins apart."""
    shapes, hues = shapes_in(split), hues_in(split)
    for _ in range(1000):
        chosen = sorted(rng.choice(hues, size=count, replace=False).tolist())
        gaps = [min(abs(a - b), NUM_HUES - abs(a - b)) for i, a in enumerate(chosen) for b in chosen[i + 1 :]]
        if all(g >= min_hue_gap for g in gaps):
            break
    else:  # pragma: no cover - the palettes are large enough for the counts we use
        raise ValueError(f"cannot draw {count} well-separated colours from split {split!r}")
    rng.shuffle(chosen)
    picked = rng.choice(len(shapes), size=count, replace=False)
    return tuple(ObjectIdentity(shapes[i], int(h)) for i, h in zip(picked, chosen))


# ----- bodies ---------------------------------------------------------------------------------------------
def _mesh_path(shape: str) -> str:
    k = mesh_index(shape)
    return os.path.join(pybullet_data.getDataPath(), "random_urdfs", f"{k:03d}", f"{k:03d}.obj")


@functools.lru_cache(maxsize=None)
def mesh_bounds(shape: str) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds of a mesh's vertices, read once from the .obj file."""
    vertices = []
    with open(_mesh_path(shape)) as f:
        for line in f:
            if line.startswith("v "):
                vertices.append([float(x) for x in line.split()[1:4]])
    v = np.asarray(vertices)
    return v.min(axis=0), v.max(axis=0)


def object_half_height(shape: str) -> float:
    """Half the height of the scaled object (its base rests on the table when placed at this height)."""
    if shape in PRIMITIVES:
        return {"box": 0.02, "cylinder": 0.025}[shape]
    lo, hi = mesh_bounds(shape)
    return float(hi[2] - lo[2]) * mesh_scale(shape) / 2


def mesh_scale(shape: str) -> float:
    """Scale a mesh to a similar visible size: thin meshes scaled by their longest side alone look like slivers."""
    lo, hi = mesh_bounds(shape)
    extents = np.sort(hi - lo)
    return float(min(OBJECT_SIZE / np.sqrt(extents[1] * extents[2]), MAX_EXTENT / extents[2]))


def create_shapes(client, identity: ObjectIdentity) -> tuple[int, int]:
    """Collision and visual shape ids for an identity, scaled (see mesh_scale) and centred."""
    rgba = hue_rgba(identity.hue)
    shape = identity.shape
    if shape == "box":
        half = (0.02, 0.02, 0.02)
        return (client.createCollisionShape(pb.GEOM_BOX, halfExtents=half),
                client.createVisualShape(pb.GEOM_BOX, halfExtents=half, rgbaColor=rgba))
    if shape == "cylinder":
        return (client.createCollisionShape(pb.GEOM_CYLINDER, radius=0.02, height=0.05),
                client.createVisualShape(pb.GEOM_CYLINDER, radius=0.02, length=0.05, rgbaColor=rgba))
    lo, hi = mesh_bounds(shape)
    scale = mesh_scale(shape)
    centre = -(lo + hi) / 2 * scale
    path = _mesh_path(shape)
    return (client.createCollisionShape(pb.GEOM_MESH, fileName=path, meshScale=[scale] * 3, collisionFramePosition=centre.tolist()),
            client.createVisualShape(pb.GEOM_MESH, fileName=path, meshScale=[scale] * 3, visualFramePosition=centre.tolist(), rgbaColor=rgba))
