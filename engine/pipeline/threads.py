"""Small concurrency helpers for a streaming pipeline: a bounded read-ahead and a bounded background worker.

Why threads (not processes, not asyncio): the stages they overlap spend their time in code that releases the GIL
(FFmpeg decoding through torchcodec, torch kernels, JPEG encoding, hashing, SQL drivers and socket I/O), and
threads share the device tensors and the loaded models without copying or pickling anything.

Why bounded: the queues between stages hold at most a few items, so a producer that runs ahead blocks instead of
filling memory, and memory stays flat however long the input is. Errors never vanish in a thread: each one is
re-raised in the consumer, in order, at the item where it happened. Nothing here knows about videos or models.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: How often a producer blocked on a full queue looks whether the consumer has gone (seconds).
_POLL_S = 0.05


class _Raised:
    """A producer's exception, carried through the queue to be raised in the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


class Prefetch(Iterator[T]):
    """Iterate ``source`` in a daemon thread, at most ``depth`` items ahead of the consumer.

    The producer thread starts at once (so the first items are ready when the consumer asks), blocks while
    ``depth`` items wait, and stops after its current item once the consumer calls :meth:`close` (leaving a ``with``
    block does, however it is left); the source is closed in the producer thread, the only one that ever touches it.
    An exception raised by the source reaches the consumer after the items produced before it.
    """

    def __init__(self, source: Iterable[T], depth: int = 2, name: str = "prefetch") -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1 (got {depth})")
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, args=(source,), name=name, daemon=True)
        self._thread.start()

    def _put(self, value: Any) -> bool:
        """Queue ``value`` unless the consumer has gone; False when it has."""
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, source: Iterable[T]) -> None:
        iterator: Iterator[T] | None = None
        try:
            iterator = iter(source)
            for value in iterator:
                if not self._put(value):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - every error goes to the consumer, which decides
            self._put(_Raised(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # a generator's finally blocks run here, in the thread that ran it

    def __iter__(self) -> Prefetch[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        value = self._queue.get()
        if value is _END:
            self._finished = True
            self._thread.join()
            raise StopIteration
        if isinstance(value, _Raised):
            self._finished = True
            self._thread.join()
            raise value.exc
        return value

    @property
    def alive(self) -> bool:
        """Whether the producer thread is still running."""
        return self._thread.is_alive()

    def close(self, timeout: float | None = None) -> None:
        """Stop the producer after its current item and wait for it (at most ``timeout`` seconds); the items it
        had queued are dropped. Safe to call twice."""
        self._finished = True
        self._stop.set()
        while True:  # free what was queued now, not when the last reference goes
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout)

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prefetch(source: Iterable[T], depth: int = 2, name: str = "prefetch") -> Prefetch[T]:
    """``source``'s items, produced in a background thread at most ``depth`` ahead (see :class:`Prefetch`)."""
    return Prefetch(source, depth, name)


class Flusher(Generic[R]):
    """One background thread running submitted jobs in submission order, with at most ``depth`` of them waiting.

    ``submit`` blocks while ``depth`` jobs wait (the running one not counted): a slow sink (uploads, SQL) slows
    its producer down instead of letting finished work pile up in memory. Each job's result, or the exception it
    raised, lands in the ``Future`` that ``submit`` returns, so the caller collects them in its own order and sees
    each error at the job it belongs to; :meth:`close` waits for the jobs (or drops the ones not started).
    """

    def __init__(self, depth: int = 2, name: str = "flusher") -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1 (got {depth})")
        self._jobs: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn = job
            if not future.set_running_or_notify_cancel():
                continue  # cancelled by close(cancel=True)
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the future
                future.set_exception(exc)

    def submit(self, fn: Callable[[], R]) -> Future[R]:
        """Queue ``fn()`` behind the jobs already submitted; blocks while ``depth`` jobs wait."""
        if self._closed:
            raise RuntimeError("submit on a closed Flusher")
        future: Future[R] = Future()
        self._jobs.put((future, fn))
        return future

    @property
    def alive(self) -> bool:
        """Whether the worker thread is still running."""
        return self._thread.is_alive()

    def close(self, cancel: bool = False) -> None:
        """Wait until every submitted job has run, then stop the worker. ``cancel=True`` cancels the jobs not
        started yet (their futures say so); the running one still ends. Safe to call twice."""
        if not self._closed:
            self._closed = True
            if cancel:
                while True:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is not None:
                        job[0].cancel()
            self._jobs.put(None)
        self._thread.join()

    def __enter__(self) -> Flusher[R]:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(cancel=exc_type is not None)
