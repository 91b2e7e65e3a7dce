"""Run one function over many independent items, in this process or on a Ray cluster, behind one small interface.

Why one interface: the heavy verbs (a challenge run over videos, film-labelling shards, reference search over
videos) all have the same shape: load models once, then process many independent items. ``Executor.map(setup, work,
items)`` says exactly that, so each verb is written once and runs unchanged on a laptop (``local``) or spread over
the CPUs and GPUs of a Ray cluster (``ray``), where every worker is an actor that runs ``setup()`` once and keeps its
state (models, connections) for all the items it is given.

``setup`` and ``work`` must be picklable for Ray: top-level functions, or ``functools.partial`` of them over
picklable arguments. A ``setup`` that loads models should ask ``engine.config.resolve_device(device, "worker")``
which device to load them on: inside a Ray actor, the executor's answer (it gave the actor a GPU or it did not).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from engine.config import EXECUTORS, environment
from engine.config.device import set_worker_gpu

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")


class ExecutorUnavailable(RuntimeError):
    """The asked-for executor cannot be used here (Ray not installed, cluster unreachable); the message says why."""


class Executor:
    """Maps ``work`` over items with per-worker state built once by ``setup``.

    ``ordered`` says whether results come back in the items' order (the local executor) or as they complete (Ray);
    callers that show progress use it to name the item in flight only when that is meaningful.
    """

    kind: str = "base"
    ordered: bool = False

    def map(
        self, setup: Callable[[], S], work: Callable[[S, T], R], items: Sequence[T], *, gpu: bool = False
    ) -> Iterator[R]:
        """Results as they complete (unordered). ``setup()`` runs once per worker (loads models etc.);
        ``work(state, item)`` per item. setup/work must be picklable (top-level functions or functools.partial of
        them). ``gpu=True`` asks for workers that hold a GPU where the cluster has any."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor started (a Ray instance it launched itself); safe to call twice."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_sequence(items: Sequence[T] | Iterable[T]) -> Sequence[T]:
    """Callers may pass any iterable; a sequence is what the pools size themselves by."""
    return items if isinstance(items, Sequence) else list(items)


class LocalExecutor(Executor):
    """Everything in this process, in the items' order: ``setup()`` once, then ``work`` on each item."""

    kind = "local"
    ordered = True

    def map(
        self, setup: Callable[[], S], work: Callable[[S, T], R], items: Sequence[T], *, gpu: bool = False
    ) -> Iterator[R]:
        items = _as_sequence(items)
        if len(items) == 0:
            return
        state = setup()
        for item in items:
            yield work(state, item)


class _Worker:
    """The body of a Ray actor: ``setup()`` once, its state kept for every item sent to this actor.

    ``setup`` and ``work`` arrive pickled, with the driver's import path: they are unpickled only after the path is
    extended, so functions defined in scripts or test modules (pickled by reference) import here as they did there.
    A failing ``setup()`` is kept and raised by each ``run`` instead of killing the actor, so the driver sees the
    original exception (type and message) rather than a generic "actor died".
    """

    def __init__(self, payload: bytes, paths: list[str], gpu: bool) -> None:
        import ray.cloudpickle

        sys.path.extend(p for p in paths if p not in sys.path and os.path.isdir(p))
        set_worker_gpu(gpu)  # what engine.config.resolve_device(..., "worker") answers in this actor
        if not gpu:
            # One actor per CPU: threads inside an actor would only compete. torch reads this when first imported.
            environment.one_thread_per_worker()
        self._error: BaseException | None = None
        self._state: Any = None
        try:
            setup, self._work = ray.cloudpickle.loads(payload)
            self._state = setup()
        except Exception as exc:  # noqa: BLE001 - re-raised by run() so the driver gets the original type
            self._error = exc
        torch = sys.modules.get("torch")  # imported by setup (or earlier): make sure, without importing it here
        if not gpu and torch is not None:
            torch.set_num_threads(1)

    def run(self, item: Any) -> Any:
        if self._error is not None:
            raise self._error
        return self._work(self._state, item)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ExecutorUnavailable(
            "--executor ray needs Ray, which is not installed: pip install '.[distributed]' (or pip install ray)"
        ) from exc
    return ray


class RayExecutor(Executor):
    """A pool of Ray actors per ``map``: one per GPU (``gpu=True`` on a cluster with GPUs) or one per CPU.

    ``address=None`` starts a private local Ray instance (``num_cpus`` CPUs, default all) that ``close()`` shuts
    down; an address (``auto``, ``ray://host:10001``, ``host:6379``) connects to a running cluster, which ``close()``
    leaves running, as it does a Ray already initialised in this process.
    """

    kind = "ray"
    ordered = False

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        ray = _import_ray()
        self._ray = ray
        self._owned = False
        self._actor_class: Any = None
        if ray.is_initialized():
            return
        # No usage-stats prompt or upload, no dashboard, no worker output relayed to this terminal.
        environment.quiet_ray()
        quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        try:
            if address in (None, "", "local"):
                ray.init(address="local", num_cpus=num_cpus, **quiet)
                self._owned = True
            else:
                if num_cpus is not None:
                    raise ValueError("num_cpus applies only to a local Ray instance, not to --ray-address")
                ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            where = address or "a local instance"
            raise ExecutorUnavailable(f"cannot start or reach Ray ({where}): {exc}") from exc

    def _resources(self) -> dict[str, float]:
        return self._ray.cluster_resources()

    def map(
        self, setup: Callable[[], S], work: Callable[[S, T], R], items: Sequence[T], *, gpu: bool = False
    ) -> Iterator[R]:
        items = _as_sequence(items)
        if len(items) == 0:
            return
        ray = self._ray
        resources = self._resources()
        use_gpu = gpu and resources.get("GPU", 0) >= 1
        if use_gpu:
            count, options = int(resources["GPU"]), {"num_gpus": 1, "num_cpus": 1}
        else:
            count, options = max(1, int(resources.get("CPU", 1))), {"num_cpus": 1}
        if self._actor_class is None:
            self._actor_class = ray.remote(_Worker)
        payload = ray.put(ray.cloudpickle.dumps((setup, work)))
        paths = [p for p in sys.path if p]
        actors = [
            self._actor_class.options(**options).remote(payload, paths, use_gpu) for _ in range(min(count, len(items)))
        ]
        pending: dict[Any, Any] = {}  # result ref -> the actor computing it
        queue = iter(items)

        def submit(actor: Any) -> None:
            for item in queue:
                pending[actor.run.remote(item)] = actor
                return

        try:
            for actor in actors:
                submit(actor)
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                actor = pending.pop(ref)
                result = self._get(ref)
                submit(actor)  # keep the freed actor busy while the caller handles this result
                yield result
        finally:
            if ray.is_initialized():
                for actor in actors:
                    ray.kill(actor)  # frees its GPU, models and connections for the next map

    def _get(self, ref: Any) -> Any:
        """``ray.get``, raising a failed task's original exception (with Ray's remote traceback as its cause)."""
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception) and not isinstance(cause, self._ray.exceptions.RayError):
                raise cause from exc
            raise

    def close(self) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
        self._owned = False


def get_executor(kind: str = "local", address: str | None = None, num_cpus: int | None = None) -> Executor:
    """The executor called ``kind``: ``local`` (this process) or ``ray`` (``address`` of a running cluster, or a
    private local instance with ``num_cpus`` CPUs). ``address`` and ``num_cpus`` are ignored by ``local``."""
    name = (kind or "local").strip().lower()
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, num_cpus)
    raise ValueError(f"unknown executor {kind!r}: use one of {', '.join(EXECUTORS)}")
