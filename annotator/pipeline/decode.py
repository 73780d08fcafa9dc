"""The decode stage: sources → decode → segment → ASR windows, as Ray Data tasks.

Each task takes rows of :data:`annotator.pipeline.inputs.INPUT` (a file still to do, or the count
of files an earlier run committed) and yields the rows of :mod:`annotator.pipeline.rows`.

Decoding turns what a file raises into its error rows (audio/ingest.py); should anything escape
that, the files it had started end here with an error row and the segments already sent, and the
task goes on with its next input: never a failed task for one file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from annotator.config import AnnotatorConfig
from annotator.pipeline.inputs import DoneSet, resolve_done
from annotator.pipeline.rows import ROW, blank_row
from annotator.pipeline.windows import ingest_rows

ROWS_PER_BLOCK = 4  # decode output (windows of ≤ 30 s) goes on in small blocks: ASR starts early


def _skipped_row(count: int) -> dict[str, Any]:
    row = blank_row()
    row.update(kind="file_done", skipped=count)
    return row


def decode(
    batch: pa.Table, config: AnnotatorConfig, done_ref: Any = None, probing: bool | None = None
) -> Iterator[pa.Table]:
    """Rows for a batch of input files. ``done_ref``: a :class:`DoneSet` (or an object ref of
    one) of the files already committed; archive members in it are skipped without decoding.
    ``probing``: whether windows carry a language probe, as the run decided it."""
    done: DoneSet = resolve_done(done_ref)
    rows: list[dict[str, Any]] = []
    for uri, skipped in zip(batch["uri"].to_pylist(), batch["skipped"].to_pylist(), strict=True):
        files = [_skipped_row(skipped)] if skipped else _guarded(uri, config, done, probing)
        for row in files:
            rows.append(row)
            if len(rows) >= ROWS_PER_BLOCK:
                yield pa.Table.from_pylist(rows, schema=ROW)
                rows = []
    if rows:
        yield pa.Table.from_pylist(rows, schema=ROW)


def _guarded(
    uri: str, config: AnnotatorConfig, done: DoneSet, probing: bool | None
) -> Iterator[dict[str, Any]]:
    """:func:`ingest_rows`, with the files open when something escapes it closed (module doc)."""
    from annotator.pipeline.failures import error_row_fields

    started: dict[str, dict[str, Any]] = {}  # call_id → its source, members and counts so far
    try:
        for row in ingest_rows(uri, config, done, probing):
            kind, call_id = row["kind"], row["call_id"]
            if kind == "file_done":
                started.pop(call_id, None)
            elif kind in ("window", "error"):
                seen = started.setdefault(
                    call_id,
                    {"source_uri": row["source_uri"], "member": row["member"], "n": 0, "e": 0},
                )
                if kind == "window":
                    seen["n"] += len(row["spans"])
                else:
                    seen["e"] += 1
            yield row
    except Exception as exc:
        from annotator.audio.sources import recording_id

        if not started:
            started[recording_id(uri, "", None)] = {"source_uri": uri, "member": "", "n": 0, "e": 0}
        for call_id, seen in started.items():
            error = blank_row()
            error.update(
                kind="error",
                **error_row_fields(call_id, seen["source_uri"], seen["member"], "decode", exc),
            )
            end = blank_row()
            end.update(
                kind="file_done",
                call_id=call_id,
                source_uri=seen["source_uri"],
                member=seen["member"],
                n_segments=seen["n"],
                n_errors=seen["e"] + 1,
            )
            yield error
            yield end
