"""Jobs in spawned worker processes, with progress messages sent back to the parent through a queue.

Spawned, not forked: no PyBullet client, HDF5 handle or torch thread pool crosses into a worker. Ctrl-C is the
parent's to handle: leaving the pool terminates the workers, and complete outputs stay where they were written.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import signal
from collections.abc import Callable
from typing import Any

_queue: mp.Queue | None = None  # per worker process: where `report` sends messages (set by the pool initializer)


def run_spawned(
    workers: int,
    job: Callable[..., Any],
    arguments: list[tuple],
    on_message: Callable[..., None],
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> list[Any]:
    """`job(*args)` for every args in `arguments` on `workers` processes; results in completion order.

    Inside a job, `report(*message)` calls `on_message(*message)` in the parent. A job's exception is re-raised here.
    """
    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    with ctx.Pool(workers, initializer=_init_worker, initargs=(messages, initializer, initargs)) as pool:
        pending = [pool.apply_async(job, args) for args in arguments]
        results = []
        while pending:
            _drain(messages, on_message, timeout=0.2)
            for done in [p for p in pending if p.ready()]:
                pending.remove(done)
                results.append(done.get())
        _drain(messages, on_message, timeout=0.0)
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
