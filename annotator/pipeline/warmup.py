"""Start-up overlapped with work: the label stage's engine starts when the run has work, not
when the first segment reaches it.

vLLM's engine takes ~20 s to start on CPU and minutes with a 7B model on a GPU. Started lazily,
at the first segment, it begins only after decode, ASR and features have handled that segment's
window; started in the label actor's constructor, a rerun with nothing to do would pay for it.
So the run holds one :class:`WorkArrived` flag (a Ray actor that takes no CPU): the ASR stage
raises it with its first window, and each label actor starts its engine in a thread as soon as
the flag is up, while ASR and features work. A run that only skips never raises it."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("annotator.annotate")


class WorkArrived:
    """A flag raised once, waited on by many (held as a Ray actor; see :func:`work_arrived`)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    async def set(self) -> None:
        self._event.set()

    async def wait(self) -> bool:
        await self._event.wait()
        return True


def work_arrived() -> Any:
    """A new flag for one run: a Ray actor handle, passed to the stages' constructors."""
    import ray

    return ray.remote(num_cpus=0)(WorkArrived).remote()


def raise_flag(flag: Any) -> None:
    """Raise ``flag`` (fire and forget); None does nothing."""
    if flag is not None:
        flag.set.remote()


def start_when_raised(flag: Any, start: Callable[[], object]) -> threading.Thread | None:
    """Call ``start`` in a daemon thread once ``flag`` is raised; None starts nothing (the caller
    starts lazily). A failed start is logged and left for the first batch to raise again."""
    if flag is None:
        return None

    def run() -> None:
        import ray

        try:
            ray.get(flag.wait.remote())
            start()
        except Exception:  # the first batch calls start() again and raises it there
            log.exception("starting the label engine ahead of the first segment failed")

    thread = threading.Thread(target=run, name="label-engine-start", daemon=True)
    thread.start()
    return thread
