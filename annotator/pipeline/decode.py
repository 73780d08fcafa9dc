"""The decode stage: sources → decode → segment → ASR windows, as Ray Data tasks.

Each task takes rows of :data:`annotator.pipeline.inputs.INPUT` (a file still to do, or the count
of files an earlier run committed) and yields the rows of :mod:`annotator.pipeline.rows`.
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
        files = [_skipped_row(skipped)] if skipped else ingest_rows(uri, config, done, probing)
        for row in files:
            rows.append(row)
            if len(rows) >= ROWS_PER_BLOCK:
                yield pa.Table.from_pylist(rows, schema=ROW)
                rows = []
    if rows:
        yield pa.Table.from_pylist(rows, schema=ROW)
