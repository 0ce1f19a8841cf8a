"""Jobs in spawned worker processes, with progress messages sent back to the parent through a queue.

Spawned, not forked: no PyBullet client, HDF5 handle or torch thread pool crosses into a worker. Ctrl-C is the
parent's to handle: leaving the pool terminates the workers, and complete outputs stay where they were written.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import signal
from collections.abc import Callable
from multiprocessing.pool import AsyncResult
from typing import Any

_queue: mp.Queue | None = None  # per worker process: where `report` sends messages (set by the pool initializer)


class SpawnedPool:
    """`workers` spawned processes running jobs that may be submitted at any time, also by an earlier job's `then`.

    A free worker takes the next job in submission order, one job at a time. Inside a job, `report(*message)`
    calls `on_message(*message)` in the parent. Leaving the `with` block terminates the workers.
    """

    def __init__(self, workers: int, on_message: Callable[..., None], initializer: Callable[..., None] | None = None,
                 initargs: tuple = ()) -> None:
        ctx = mp.get_context("spawn")
        self._messages = ctx.Queue()
        self._on_message = on_message
        self._pool = ctx.Pool(workers, initializer=_init_worker, initargs=(self._messages, initializer, initargs))
        self._pending: list[tuple[AsyncResult, Callable[[Any], None]]] = []

    def __enter__(self) -> SpawnedPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.terminate()

    def submit(self, job: Callable[..., Any], args: tuple, then: Callable[[Any], None]) -> None:
        """Queue `job(*args)`; `then(result)` runs in the parent, inside `wait`."""
        self._pending.append((self._pool.apply_async(job, args), then))

    def wait(self) -> None:
        """Until every job is done, those that `then` submits meanwhile included. A job's exception is re-raised here."""
        while self._pending:
            _drain(self._messages, self._on_message, timeout=0.2)
            for done in [p for p in self._pending if p[0].ready()]:
                self._pending.remove(done)
                outcome, then = done
                then(outcome.get())
        _drain(self._messages, self._on_message, timeout=0.0)


def run_spawned(
    workers: int,
    job: Callable[..., Any],
    arguments: list[tuple],
    on_message: Callable[..., None],
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> list[Any]:
    """`job(*args)` for every args in `arguments` on `workers` processes (a `SpawnedPool`); results in completion order."""
    results: list[Any] = []
    with SpawnedPool(workers, on_message, initializer, initargs) as pool:
        for args in arguments:
            pool.submit(job, args, results.append)
        pool.wait()
    return results


def report(*message: Any) -> None:
    """From inside a job: send a progress message to the parent."""
    _queue.put(message)


def _init_worker(messages: mp.Queue, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    global _queue
    _queue = messages
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)


def _drain(messages: mp.Queue, on_message: Callable[..., None], timeout: float) -> None:
    try:
        message = messages.get(timeout=timeout) if timeout else messages.get_nowait()
        while True:
            on_message(*message)
            message = messages.get_nowait()
    except queue_module.Empty:
        pass
