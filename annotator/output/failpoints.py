"""Named points at which a test kills or holds this process, to prove what holds there.

``ANNOTATOR_KILL_AT=<point>[@<n>]`` sends SIGKILL to the process the n-th time (default the first)
it reaches ``<point>``. Points: ``commit:start`` (rows gathered, nothing written),
``commit:segments`` / ``commit:errors`` (that table appended, the ledger not yet), ``commit:files``
(the ledger appended), ``compact:<table>`` (that table compacted, the next not yet),
``vacuum:<table>`` and ``asr`` (a stage actor given windows to transcribe).

``ANNOTATOR_PAUSE_AT=<point>`` with ``ANNOTATOR_PAUSE_MARK=<path>`` holds the first process, of
all that share the path, to reach the point: it creates the file, writes its Ray node id there and
sleeps (at most ``PAUSE_S``), so a test can take that node away while it holds work.

Unset, as always outside tests, a point costs two environment lookups.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

ENV = "ANNOTATOR_KILL_AT"
PAUSE_ENV, PAUSE_MARK_ENV = "ANNOTATOR_PAUSE_AT", "ANNOTATOR_PAUSE_MARK"
PAUSE_S = 600.0
_reached: Counter[str] = Counter()


def point(name: str) -> None:
    if os.environ.get(PAUSE_ENV) == name:
        _pause(os.environ[PAUSE_MARK_ENV])
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition("@")
    if name != target:
        return
    _reached[name] += 1
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _pause(mark: str) -> None:
    try:
        fd = os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:  # another process holds: this one goes on
        return
    import ray

    with os.fdopen(fd, "w") as f:
        f.write(ray.get_runtime_context().get_node_id())
    deadline = time.monotonic() + PAUSE_S
    while time.monotonic() < deadline:
        time.sleep(0.5)
