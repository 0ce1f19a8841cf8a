"""Shared fixtures. Environments are cached per (family, image size) because building one loads the Panda."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny ops are dominated by OpenMP hand-offs when the 2 cores are shared (pytest -n 2): use one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def make_env():
    import envs

    cache: dict = {}

    def _make(family: str, **kwargs):
        key = (family, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = envs.make(family, **kwargs)
        return cache[key]

    yield _make
    for env in cache.values():
        env.close()
