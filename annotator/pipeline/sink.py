"""The sink: gathers the rows of each file, then commits them exactly once.

Rows of one file reach the sink in any order (actor pools reorder batches). When the file's
``file_done`` row and all the segment and error rows it announces have arrived, the sink writes

1. ``segments/<call_id[:2]>/<call_id>.parquet`` (if it has segments),
2. ``errors/<call_id[:2]>/<call_id>.parquet`` (if it has errors),
3. the ledger marker,

each atomically and under a name that depends only on the input. A crash between 1 and 3 leaves
complete files without a marker; the next run redoes the file and overwrites them. Readers never
see a half-written file or a duplicate row.
"""

from __future__ import annotations

import io
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from annotator.pipeline.ledger import Ledger, Output
from annotator.schema import ERRORS, SEGMENTS

PLACED_STAGES = ("asr", "features", "label")


@dataclass
class RunInfo:
    """What every row of one run carries."""

    run_id: str
    bundle_version: str
    asr_model: str
    llm_model: str


@dataclass
class _Pending:
    segments: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    done: dict[str, Any] | None = None

    def complete(self) -> bool:
        return (
            self.done is not None
            and len(self.segments) == self.done["n_segments"]
            and len(self.errors) == self.done["n_errors"]
        )


@dataclass
class Counts:
    files: int = 0  # committed this run
    skipped: int = 0  # already committed by an earlier run
    recordings: int = 0
    segments: int = 0
    errors: int = 0
    audio_s: float = 0.0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (uri, member, message)
    # stage → "<node id>/<actor id>" → segments it processed (the model stages' ``<stage>_at``)
    placement: dict[str, Counter[str]] = field(default_factory=dict)

    def nodes_per_stage(self) -> dict[str, dict[str, int]]:
        """stage → node id → how many of the stage's actors on that node processed segments."""
        out: dict[str, dict[str, int]] = {}
        for stage, workers in self.placement.items():
            nodes = Counter(where.split("/")[0] for where in workers)
            out[stage] = dict(sorted(nodes.items()))
        return out


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _shard(table: str, call_id: str) -> str:
    return posixpath.join(table, call_id[:2], f"{call_id}.parquet")


class Sink:
    def __init__(self, output: Output, info: RunInfo) -> None:
        self.output = output
        self.ledger = Ledger(output)
        self.info = info
        self.pending: dict[str, _Pending] = {}
        self.counts = Counts()

    def add(self, batch: pa.Table) -> list[str]:
        """Take a batch of finished rows; returns the call_ids committed by it."""
        committed = []
        for row in batch.to_pylist():
            kind = row["kind"]
            if kind == "file_done" and row["skipped"]:
                self.counts.skipped += row["skipped"]
                continue
            pending = self.pending.setdefault(row["call_id"], _Pending())
            if kind == "segment":
                pending.segments.append(row)
                for stage in PLACED_STAGES:
                    where = row.get(f"{stage}_at")
                    if where:
                        self.counts.placement.setdefault(stage, Counter())[where] += 1
            elif kind == "error":
                pending.errors.append(row)
            elif kind == "file_done":
                pending.done = row
            if pending.complete():
                self._commit(row["call_id"], self.pending.pop(row["call_id"]))
                committed.append(row["call_id"])
        return committed

    def _commit(self, call_id: str, pending: _Pending) -> None:
        done = pending.done
        assert done is not None
        if not pending.segments and not pending.errors:
            return  # an archive's own unit with nothing to say: nothing to commit
        now = datetime.now(UTC)
        if pending.segments:
            rows = [self._segment(r, now) for r in pending.segments]
            rows.sort(key=lambda r: (r["recording_id"], r["segment_index"]))
            self.output.write_bytes(_shard("segments", call_id), _table(rows, SEGMENTS))
        if pending.errors:
            rows = [self._error(r, now) for r in pending.errors]
            self.output.write_bytes(_shard("errors", call_id), _table(rows, ERRORS))
        recordings = sorted({r["recording_id"] for r in pending.segments})
        self.ledger.mark(
            call_id,
            {
                "call_id": call_id,
                "source_uri": done["source_uri"],
                "member": done["member"],
                "recordings": recordings,
                "segments": len(pending.segments),
                "errors": len(pending.errors),
                "duration_s": done["duration_s"],
                "run_id": self.info.run_id,
                "committed_at": now.isoformat(),
            },
        )
        self.counts.files += 1
        self.counts.recordings += len(recordings)
        self.counts.segments += len(pending.segments)
        self.counts.errors += len(pending.errors)
        self.counts.audio_s += done["duration_s"]
        self.counts.failed += [(r["source_uri"], r["member"], r["message"]) for r in pending.errors]

    def _segment(self, row: dict[str, Any], now: datetime) -> dict[str, Any]:
        out = {name: row.get(name) for name in SEGMENTS.names}
        out.update(
            run_id=self.info.run_id,
            segment_id=f"{row['recording_id']}-{row['segment_index']:06d}",
            bundle_version=self.info.bundle_version,
            asr_model=self.info.asr_model,
            llm_model=self.info.llm_model,
            processed_at=now,
        )
        return out

    def _error(self, row: dict[str, Any], now: datetime) -> dict[str, Any]:
        out = {name: row.get(name) for name in ERRORS.names}
        out.update(run_id=self.info.run_id, at=now)
        return out

    def unfinished(self) -> list[str]:
        """Files that started but never completed (a run that ended early)."""
        return sorted(self.pending)
