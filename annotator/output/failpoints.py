"""Named points at which a test kills or holds this process, to prove what holds there.

``ANNOTATOR_KILL_AT=<point>[@<n>]`` sends SIGKILL to the process the n-th time (default the first)
it reaches ``<point>``. Points: ``commit:start`` (rows gathered, nothing written),
``commit:segments`` / ``commit:errors`` (that table appended, the ledger not yet), ``commit:files``
(the ledger appended), ``compact:<table>`` (that table compacted, the next not yet),
``vacuum:<table>`` and ``asr`` (a stage actor given windows to transcribe).

``ANNOTATOR_PAUSE_AT=<point>`` with ``ANNOTATOR_PAUSE_MARK=<key>`` holds the first process of the
Ray cluster to reach the point: it puts its Ray node id under that key of Ray's internal key-value
store (the cluster's, so nodes that share no disk see it; only the first put wins) and sleeps (at
most ``PAUSE_S``), so a test can take that node away while it holds work.

``ANNOTATOR_RAISE_AT=<point>:<text>[,<point>:<text>…]`` makes ``<point>`` raise for a file whose
``source_uri`` (or ``source_uri!member``) contains ``<text>``, every time: an exception of a type
no stage expects (:class:`InjectedFailure`), or at ``source`` (opening a source) a
``ConnectionResetError``, which may pass (annotator/pipeline/failures.py). Points: ``source``,
``decode`` (mid-file, after its first block), each model stage by name (``asr``, ``features``,
``label`` and every kind's own stage by its name) and ``context`` (the sink's per-file labelling
of a context bundle).

Unset, as always outside tests, a point costs two environment lookups.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

ENV = "ANNOTATOR_KILL_AT"
RAISE_ENV = "ANNOTATOR_RAISE_AT"
PAUSE_ENV, PAUSE_MARK_ENV = "ANNOTATOR_PAUSE_AT", "ANNOTATOR_PAUSE_MARK"
PAUSE_S = 600.0
PAUSE_NAMESPACE = "annotator-failpoints"


def paused_node(mark: str) -> str | None:
    """The node id of the process holding at ``mark``, once one is (the test's side)."""
    from ray.experimental.internal_kv import _internal_kv_get

    found = _internal_kv_get(mark, namespace=PAUSE_NAMESPACE)
    return found.decode() if found else None


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


class InjectedFailure(Exception):
    """Raised by ``ANNOTATOR_RAISE_AT``: a type no stage expects."""


def poison(name: str, rows) -> None:
    """Raise (see the module doc) when ``ANNOTATOR_RAISE_AT`` names ``name`` and one of ``rows``
    (an Arrow table of stream rows, or the names themselves) matches."""
    spec = os.environ.get(RAISE_ENV)
    if not spec:
        return
    matches = [m for p, _, m in (part.partition(":") for part in spec.split(",")) if p == name]
    if not matches:
        return
    if hasattr(rows, "column_names"):
        from annotator.pipeline.failures import names_of

        rows = names_of(rows)
    for found in rows:
        for text in matches:
            if text and text in found:
                if name == "source":
                    raise ConnectionResetError(f"injected at source: {found}: connection reset")
                raise InjectedFailure(f"injected at {name}: {found}")


def _pause(mark: str) -> None:
    import ray
    from ray.experimental.internal_kv import _internal_kv_put

    node = ray.get_runtime_context().get_node_id()
    if _internal_kv_put(mark, node, overwrite=False, namespace=PAUSE_NAMESPACE):
        return  # another process holds: this one goes on
    deadline = time.monotonic() + PAUSE_S
    while time.monotonic() < deadline:
        time.sleep(0.5)
