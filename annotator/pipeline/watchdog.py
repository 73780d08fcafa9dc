"""The stall watchdog: a run (or training, or an evaluation) that makes no progress for
``run.stall_timeout_s`` stops, naming what its Ray work waits for, instead of waiting until a
RayJob's deadline.

:class:`Watchdog` watches a progress mark the work moves (:meth:`Watchdog.progress`); when it has
not moved for the timeout, it asks Ray's state API which actors and tasks wait to be placed and
with which resources (:func:`unmet_demands`), keeps that as :attr:`Watchdog.reason`, and
interrupts the main thread (``KeyboardInterrupt`` there), which the caller turns into its error.
Off the main thread (a notebook running the work in a thread) it only logs.
"""

from __future__ import annotations

import _thread
import logging
import re
import threading
import time
from collections import Counter

log = logging.getLogger("annotator")


def _resources(required: dict | None) -> str:
    if not required:
        return "no resources"
    parts = []
    for name, amount in sorted(required.items()):
        if name == "memory" or name == "object_store_memory":
            parts.append(f"{name} {amount / 2**30:.1f} GiB")
        else:
            parts.append(f"{name} {amount:g}")
    return ", ".join(parts)


def _stage(class_name: str) -> str:
    """``MapWorker(MapBatches(LabelStage))`` → ``label``; other names as they are."""
    found = re.search(r"MapBatches\((\w+)\)", class_name or "")
    name = found.group(1) if found else (class_name or "?")
    name = name.removesuffix("Stage")
    return name.lower() if found else name


def unmet_demands() -> str:
    """What waits to be placed on the cluster, from the GCS (no dashboard needed): the stages
    whose actors wait to be created, each resource shape the autoscaler is asked for, and what
    the cluster has free."""
    import ray
    from ray._private.state import state
    from ray._raylet import GcsClient
    from ray.autoscaler.v2.sdk import get_cluster_resource_state

    try:
        stages: Counter[str] = Counter(
            _stage(actor["ActorClassName"])
            for actor in state.actor_table(None).values()
            if actor["State"] in ("PENDING_CREATION", "DEPENDENCIES_UNREADY")
        )
        gcs = GcsClient(address=ray.get_runtime_context().gcs_address)
        shapes: Counter[str] = Counter()
        for request in get_cluster_resource_state(gcs).pending_resource_requests:
            shapes[_resources(dict(request.request.resources_bundle))] += request.count
        free = _resources(
            {k: v for k, v in ray.available_resources().items() if k in ("CPU", "GPU", "memory")}
        )
    except Exception as exc:  # the cluster's state unreadable: say so, do not hide the stall
        return f"the cluster's state could not be read ({type(exc).__name__}: {exc})"
    if not stages and not shapes:
        return f"nothing waits to be placed (a stage is busy or holds: see its log); free: {free}"
    waiting = ", ".join(f"stage {name} ({n} actor{'s' * (n > 1)})" for name, n in stages.items())
    asked = "; ".join(f"{n} × {{{shape}}}" for shape, n in shapes.most_common())
    return (
        f"waiting to be placed: {waiting or 'tasks'}; resources asked for and not found: "
        f"{asked or 'none'}; the cluster has free: {free}"
    )


class Watchdog:
    """Stops the work in the main thread when :meth:`progress` is not called for
    ``timeout_s`` (0: never). Use as a context manager around the work."""

    def __init__(self, timeout_s: float, what: str = "no file finished") -> None:
        self.timeout_s = timeout_s
        self.what = what
        self.reason: str | None = None
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def progress(self) -> None:
        self._last = time.monotonic()

    @property
    def fired(self) -> bool:
        return self.reason is not None

    def __enter__(self) -> Watchdog:
        self.progress()
        self._owner = threading.current_thread()
        if self.timeout_s > 0:
            self._thread = threading.Thread(
                target=self._watch, name="annotator-watchdog", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        interval = min(5.0, max(0.5, self.timeout_s / 10))
        while not self._stop.wait(interval):
            idle = time.monotonic() - self._last
            if idle < self.timeout_s:
                continue
            self.reason = (
                f"{self.what} for {idle:.0f} s (run.stall_timeout_s {self.timeout_s:g}): "
                f"{unmet_demands()}"
            )
            log.error("stopping: %s", self.reason)
            if self._owner is threading.main_thread():
                _thread.interrupt_main()
            return
