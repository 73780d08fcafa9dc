"""The decode stage: sources → decode → segment → ASR windows, as Ray Data tasks.

Each task takes rows of :data:`annotator.pipeline.inputs.INPUT` (a file still to do, or the count
of files an earlier run committed) and yields the rows of :mod:`annotator.pipeline.rows`.

Decoding turns what a file raises into its error rows (audio/ingest.py); should anything escape
that, the files it had started end here with an error row and the segments already sent, and the
task goes on with its next input: never a failed task for one file.

An archive is one input and one decode task, which reads it once. With ``members_apart`` (the
annotate graph) that task only lists and reads its members and hands each one on as a ``member``
row (its bytes in ``audio``); the graph puts every such row in a block of its own, and
:func:`decode_members` decodes them, one task a block, side by side: a 4-hour archive is no
longer one core's work.
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


def _blocks(rows: Iterator[dict[str, Any]]) -> Iterator[pa.Table]:
    block: list[dict[str, Any]] = []
    for row in rows:
        block.append(row)
        if len(block) >= ROWS_PER_BLOCK:
            yield pa.Table.from_pylist(block, schema=ROW)
            block = []
    if block:
        yield pa.Table.from_pylist(block, schema=ROW)


def decode(
    batch: pa.Table,
    config: AnnotatorConfig,
    done_ref: Any = None,
    probing: bool | None = None,
    members_apart: bool = False,
) -> Iterator[pa.Table]:
    """Rows for a batch of input files. ``done_ref``: a :class:`DoneSet` (or an object ref of
    one) of the files already committed; archive members in it are skipped without decoding.
    ``probing``: whether windows carry a language probe, as the run decided it.
    ``members_apart``: archive members come out as ``member`` rows, for :func:`decode_members`."""
    done: DoneSet = resolve_done(done_ref)

    def rows() -> Iterator[dict[str, Any]]:
        for uri, skipped in zip(
            batch["uri"].to_pylist(), batch["skipped"].to_pylist(), strict=True
        ):
            if skipped:
                yield _skipped_row(skipped)
            else:
                yield from _guarded(uri, config, done, probing, members_apart=members_apart)

    yield from _blocks(rows())


def decode_members(
    batch: pa.Table, config: AnnotatorConfig, probing: bool | None = None
) -> Iterator[pa.Table]:
    """The ``member`` rows of a batch decoded (an archive member :func:`decode` read and handed
    on), as :func:`decode` would have decoded them in place; every other row passes through."""
    import pyarrow.compute as pc

    from annotator.audio.ingest import MemberData

    handed_on = pc.equal(batch.column("kind"), "member")
    rest = batch.filter(pc.invert(handed_on))
    if rest.num_rows:
        yield rest
    members = batch.filter(handed_on).select(["source_uri", "member", "call_id", "audio"])

    def rows() -> Iterator[dict[str, Any]]:
        for m in members.to_pylist():
            data = MemberData(m["source_uri"], m["member"], m["call_id"], m["audio"])
            yield from _guarded(m["source_uri"], config, DoneSet(), probing, member=data)

    yield from _blocks(rows())


def _guarded(
    uri: str,
    config: AnnotatorConfig,
    done: DoneSet,
    probing: bool | None,
    members_apart: bool = False,
    member: Any = None,
) -> Iterator[dict[str, Any]]:
    """:func:`ingest_rows`, with the files open when something escapes it closed (module doc)."""
    from annotator.pipeline.failures import error_row_fields

    started: dict[str, dict[str, Any]] = {}  # call_id → its source, members and counts so far
    try:
        for row in ingest_rows(uri, config, done, probing, members_apart, member):
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
            name = member.member if member is not None else ""
            started[recording_id(uri, name, None)] = {
                "source_uri": uri,
                "member": name,
                "n": 0,
                "e": 0,
            }
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
