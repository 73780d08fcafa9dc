"""What a failure is, and what it costs: the file's, never the night's (docs/failures.md).

* **Transient or permanent.** :func:`error_class` sorts an exception: storage throttling, the
  network, credentials and a lost Ray actor may pass (*transient*); anything else is the file's
  own (*permanent*). A source that fails transiently is retried in the run (:func:`with_retries`)
  and, if it still fails, committed with ``status = 'retry'`` in the ledger: the next run does it.
  Permanent errors stay quarantined until a run is told ``--retry-errors``.
* **Per-file isolation in the model stages.** :func:`guarded` runs a stage on a batch; when the
  batch raises, it runs the stage again on each file's rows of the batch, and puts one error row
  (``replaces`` = the segments it stands for) in place of the work of each file that still
  raises. The file's other rows go on, so the sink knows when it has it all, and commits it
  quarantined: its error rows, no segments.
* **The stage's fault stops the run.** :class:`Streak` counts a stage actor's files failing in a
  row; at ``run.max_failures_in_a_row`` (or at once for an engine that died) the stage raises
  :class:`StageBroken` and the run stops loudly instead of quarantining every file.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow as pa

log = logging.getLogger("annotator.annotate")

TRANSIENT, PERMANENT = "transient", "permanent"
# Row kinds that carry a file's model work (rows.py); the others pass through every stage.
WORK = ("window", "segment")
# Exception type names (from libraries not imported here) that are never a file's fault.
_FATAL_NAMES = {"EngineDeadError", "EngineGenerateError"}
_TRANSIENT_NAMES = {
    "RayActorError",
    "ActorDiedError",
    "ActorUnavailableError",
    "ObjectLostError",
    "OwnerDiedError",
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ClientConnectorError",
    "ServerDisconnectedError",
    "NoCredentialsError",
    "CredentialRetrievalError",
}
# Words of an S3 error code or message that mark it as passing (throttling, a server's trouble,
# credentials that may be renewed).
_TRANSIENT_WORDS = (
    "slowdown",
    "throttl",
    "requesttimeout",
    "serviceunavailable",
    "internalerror",
    "accessdenied",
    "expiredtoken",
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "too many requests",
)
_PERMANENT_ERRNOS = {errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EINVAL, errno.ENAMETOOLONG}

T = TypeVar("T")


class StageBroken(RuntimeError):
    """A stage failed on file after file: the fault is the stage's, not the files'."""


def chain(exc: BaseException):
    """``exc`` and what caused it, outermost first."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def error_class(exc: BaseException) -> str:
    """``transient`` when ``exc`` (or what caused it) may pass on a later try, else
    ``permanent``."""
    for e in chain(exc):
        name = type(e).__name__
        if name in _TRANSIENT_NAMES or isinstance(e, (ConnectionError, TimeoutError)):
            return TRANSIENT
        if isinstance(e, PermissionError):  # s3fs's AccessDenied: credentials, a policy
            return TRANSIENT
        text = f"{name} {e}".lower().replace(" ", "")
        if any(word.replace(" ", "") in text for word in _TRANSIENT_WORDS):
            return TRANSIENT
        if (
            isinstance(e, OSError)
            and not isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError))
            and e.errno not in _PERMANENT_ERRNOS
        ):
            return TRANSIENT  # an I/O error from storage: EIO, a reset, a 5xx turned OSError
    return PERMANENT


def fatal(exc: BaseException) -> bool:
    """Whether ``exc`` says the stage itself is gone (its engine died): no file can help."""
    return any(type(e).__name__ in _FATAL_NAMES for e in chain(exc))


def describe(exc: BaseException) -> str:
    """One line: ``<type>: <message>``, the message's first line, at most 500 characters."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}"[:500]


def with_retries(
    attempt: Callable[[], T], tries: int, backoff_s: float, what: str
) -> tuple[T | None, BaseException | None, int]:
    """``attempt()`` until it succeeds, fails permanently or was tried ``tries`` times, waiting
    ``backoff_s`` × 2^k between; returns (its result or None, the last exception or None, the
    tries made)."""
    for k in range(tries):
        try:
            return attempt(), None, k + 1
        except Exception as exc:  # sorted below: only a transient failure is tried again
            if error_class(exc) != TRANSIENT or k == tries - 1:
                return None, exc, k + 1
            wait = backoff_s * 2**k
            log.warning("%s failed (%s); trying again in %.1f s", what, describe(exc), wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


class Streak:
    """A stage actor's files failing one after another, with no success between."""

    def __init__(self, stage: str, limit: int) -> None:
        self.stage, self.limit, self.count = stage, limit, 0

    def succeeded(self) -> None:
        self.count = 0

    def failed(self, exc: BaseException) -> None:
        self.count += 1
        if fatal(exc) or self.count >= self.limit:
            raise StageBroken(
                f"stage {self.stage} failed on {self.count} files in a row, the last with "
                f"{describe(exc)}: the fault is the stage's, not the files' (raise "
                "run.max_failures_in_a_row if these files are really all bad)"
            ) from exc


def _by_file(batch: pa.Table) -> list[pa.Table]:
    """The batch's rows, one table per call_id, in the order files first appear."""
    import pyarrow.compute as pc

    ids = batch.column("call_id")
    order = list(dict.fromkeys(ids.to_pylist()))
    return [batch.filter(pc.equal(ids, call_id)) for call_id in order]


def quarantine_rows(rows: pa.Table, stage: str, exc: BaseException) -> pa.Table:
    """One file's rows of a batch with its work (window and segment rows) replaced by one error
    row standing for their segments; its other rows unchanged. Same schema as ``rows``."""
    listed = rows.to_pylist()
    work = [r for r in listed if r["kind"] in WORK]
    if not work:
        raise exc  # nothing of the file's own failed: the stage cannot pass rows through
    replaces = sum(len(r["spans"]) if r["kind"] == "window" else 1 for r in work)
    error = dict(work[0])
    for name, field in zip(rows.schema.names, rows.schema, strict=True):
        if pa.types.is_binary(field.type):
            error[name] = b""
        elif pa.types.is_list(field.type):
            error[name] = []
    error.update(
        error_row_fields(error["call_id"], error["source_uri"], error["member"], stage, exc),
        kind="error",
        replaces=replaces,
    )
    kept = [r for r in listed if r["kind"] not in WORK]
    return pa.Table.from_pylist([*kept, error], schema=rows.schema)


def guarded(
    stage: str, process: Callable[[pa.Table], pa.Table], batch: pa.Table, streak: Streak
) -> pa.Table:
    """``process(batch)``; when it raises, file by file, each file that still raises
    quarantined (see the module doc)."""
    from annotator.output import failpoints

    def run(rows: pa.Table) -> pa.Table:
        if os.environ.get(failpoints.RAISE_ENV):  # tests only: the names cost a pass over rows
            kinds = rows["kind"].to_pylist()
            names = names_of(rows)
            failpoints.poison(stage, [n for n, k in zip(names, kinds, strict=True) if k in WORK])
        return process(rows)

    try:
        out = run(batch)
    except Exception as exc:
        if fatal(exc):
            raise
        files = _by_file(batch)
        if len(files) == 1:
            streak.failed(exc)
            log.warning("stage %s quarantines %s: %s", stage, _name(batch), describe(exc))
            return process(quarantine_rows(batch, stage, exc))
        parts = []
        for rows in files:
            try:
                parts.append(run(rows))
                streak.succeeded()
            except Exception as one:
                streak.failed(one)
                log.warning("stage %s quarantines %s: %s", stage, _name(rows), describe(one))
                parts.append(process(quarantine_rows(rows, stage, one)))
        return pa.concat_tables(parts)
    if any(k in WORK for k in batch.column("kind").to_pylist()):
        streak.succeeded()
    return out


def _name(rows: pa.Table) -> str:
    return names_of(rows.slice(0, 1))[0]


def names_of(rows: pa.Table) -> list[str]:
    """``source_uri`` or ``source_uri!member`` of each row (what failpoints match)."""
    from annotator.audio.sources import recording_name

    return [
        recording_name(u, m)
        for u, m in zip(rows["source_uri"].to_pylist(), rows["member"].to_pylist(), strict=True)
    ]


def error_row_fields(
    call_id: str, source_uri: str, member: str, stage: str, exc: BaseException
) -> dict[str, Any]:
    """The columns of an ``errors`` row the stream fills, for ``exc`` in ``stage``."""
    return {
        "call_id": call_id,
        "source_uri": source_uri,
        "member": member,
        "stage": stage,
        "error_type": type(exc).__name__,
        "message": describe(exc),
        "error_class": error_class(exc),
    }
