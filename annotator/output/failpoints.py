"""Named points at which a test has this process killed, to prove exactly-once holds there.

``ANNOTATOR_KILL_AT=<point>[@<n>]`` sends SIGKILL to the process the n-th time (default the first)
it reaches ``<point>``. Points: ``commit:start`` (rows gathered, nothing written),
``commit:segments`` / ``commit:errors`` (that table appended, the ledger not yet), ``commit:files``
(the ledger appended), ``compact:<table>`` (that table compacted, the next not yet) and
``vacuum:<table>``. Unset, as always outside tests, a point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "ANNOTATOR_KILL_AT"
_reached: Counter[str] = Counter()


def point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition("@")
    if name != target:
        return
    _reached[name] += 1
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
