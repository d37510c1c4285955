"""A serial lane on a shared thread pool: one stream's work runs in order, off the caller's thread.

The audio stages after the codec (resampling, speed, loudness, Opus) are stateful per line, so one line's
pieces must run one after another, but different lines can run at once, and none of them needs the GPU
thread. Each lane drains its queue on one pool thread at a time (the serial-executor-over-a-pool pattern of
Java's SerialExecutor and Guava's SequentialExecutor). libopus calls through ctypes release the GIL, as do
CUDA waits in torch, so the lanes of several lines and the GPU thread really overlap.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")


class LaneError(RuntimeError):
    """A piece of work in the lane raised; the lane refuses further work."""


class SerialLane(Generic[T]):
    """Runs submitted callables in order on `executor`, at most one at a time; `take` collects their results."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._todo: deque[Callable[[], T]] = deque()
        self._results: list[T] = []
        self._running = False
        self._error: BaseException | None = None

    def submit(self, work: Callable[[], T]) -> None:
        with self._lock:
            self._raise_if_failed()
            self._todo.append(work)
            if self._running:
                return  # the drain under way picks it up
            self._running = True
        self._executor.submit(self._drain)

    def take(self, *, wait: bool) -> list[T]:
        """Results so far, in submission order; with `wait`, first everything submitted. Raises `LaneError`
        (from the original exception) if a piece of work failed."""
        with self._lock:
            if wait:
                self._idle.wait_for(lambda: not self._running)
            self._raise_if_failed()
            results, self._results = self._results, []
            return results

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._todo or self._error is not None:
                    self._todo.clear()
                    self._running = False
                    self._idle.notify_all()
                    return
                work = self._todo.popleft()
            try:
                result = work()
            except BaseException as exc:  # kept for the caller: a pool thread has nobody to tell
                with self._lock:
                    self._error = exc
                continue
            with self._lock:
                self._results.append(result)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise LaneError(f"audio work failed: {self._error}") from self._error
