"""The sink: gathers the rows of each input file, then commits many finished files at once.

Rows of one file reach the sink in any order (actor pools reorder batches). A file is finished
when its ``file_done`` row and every segment and error row it announces have arrived. Finished
files wait until ``commit.max_files`` of them are ready or ``commit.every_s`` has passed, then go
out as one commit (``annotator/output/tables.py``):

1. their segment rows appended to ``segments`` and their error rows to ``errors``, each row
   carrying the commit's ``commit_id``;
2. one row per file appended to ``files`` (the ledger): this append is the commit.

A crash before 2 leaves rows no ``files`` row names: the views never show them and the rerun
redoes those files.

A file a stage quarantined (an error row with ``replaces`` > 0, annotator/pipeline/failures.py)
is committed with its error rows and none of its segments; a file with a transient error is
committed the same way with ``status = 'retry'``: recorded, not done, and the next run does it.

Rows stay Arrow tables from the stream to the table (no Python dict per row); the commit runs on
a thread of its own while the driver goes on gathering the next one. For a kind with a context
labeller that thread first has each file's segments labelled together, by the labeller's actor
pool (its ``Kind.context``: annotator/pipeline/context.py).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from annotator.audio.sources import is_archive
from annotator.config import CommitConfig
from annotator.kinds import DEFAULT_KIND, KINDS
from annotator.output import failpoints
from annotator.output.tables import OutputTables
from annotator.schema import ERRORS, FILES, SEGMENTS

log = logging.getLogger("annotator.annotate")

# The model stages whose rows say where they ran (``<stage>_at``): ASR and every kind's own.
PLACED_STAGES = ("asr", *dict.fromkeys(s for k in KINDS.values() for s in k.stages))
# Columns the sink fills in itself; every other column of a table comes from the rows.
_RUN_COLUMNS = {
    "run_id",
    "segment_id",
    "bundle_kind",
    "bundle_version",
    "asr_model",
    "llm_model",
    "processed_at",
    "commit_id",
    "at",
}


@dataclass
class RunInfo:
    """What every row of one run carries."""

    run_id: str
    bundle_version: str
    asr_model: str
    llm_model: str
    bundle_kind: str = DEFAULT_KIND


@dataclass
class Counts:
    files: int = 0  # committed this run
    finished: int = 0  # finished in the sink this run: committed, or in the next commit
    skipped: int = 0  # already committed by an earlier run
    recordings: int = 0
    segments: int = 0
    errors: int = 0
    audio_s: float = 0.0
    commits: int = 0
    retry: int = 0  # committed not done (a transient error): the next run does them
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


@dataclass
class _Commit:
    """One commit's rows, ready to append."""

    seq: int
    files: list[dict[str, Any]]
    segments: pa.Table | None
    errors: pa.Table | None


def _columns(table: pa.Table, schema: pa.Schema, keep: tuple[str, ...] = ()) -> pa.Table:
    """The row columns ``schema`` takes from the stream (missing ones null), in its order, and
    the columns ``keep`` (a context bundle's embeddings, until they are read)."""
    names = [n for n in schema.names if n not in _RUN_COLUMNS]
    names += [n for n in keep if n not in names]
    arrays = [
        table.column(n)
        if n in table.column_names
        else pa.nulls(table.num_rows, schema.field(n).type)
        for n in names
    ]
    return pa.table(arrays, names=names)


def _concat(parts: list[pa.Table]) -> pa.Table | None:
    return pa.concat_tables(parts) if parts else None


class Sink:
    def __init__(
        self,
        tables: OutputTables,
        info: RunInfo,
        commit: CommitConfig | None = None,
        context: Any = None,
    ) -> None:
        """``context``: a context bundle's labeller (``label(segments)`` and the ``columns`` its
        stages add for it: annotator/pipeline/context.py's pool, or the labeller itself), which
        labels each commit's files' segments together before they are written."""
        self.tables = tables
        self.context = context
        self._keep = tuple(context.columns) if context is not None else ()
        self.info = info
        self.commit = commit or CommitConfig()
        self.counts = Counts()
        self._segments: list[pa.Table] = []
        self._errors: list[pa.Table] = []
        self._arrived: Counter[tuple[str, str]] = Counter()  # (call_id, kind) → rows
        self._expected: dict[str, dict[str, Any]] = {}  # call_id → its file_done row
        self._ready: dict[str, dict[str, Any]] = {}  # finished, not yet committed
        self._ready_since: float | None = None
        self._quarantined: set[str] = set()  # call_ids a stage put an error row in place of
        self._transient: set[str] = set()  # call_ids with a transient error: not done
        self._seq = 0
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="annotator-commit")
        self._inflight: Future | None = None

    # -- gathering -----------------------------------------------------------------------------

    def add(self, batch: pa.Table) -> None:
        """Take a batch of finished rows; commits when enough files are finished."""
        kind = batch.column("kind")
        touched: set[str] = set()
        for name, schema, parts in (
            ("segment", SEGMENTS, self._segments),
            ("error", ERRORS, self._errors),
        ):
            rows = batch.filter(pc.equal(kind, name))
            if not rows.num_rows:
                continue
            parts.append(_columns(rows, schema, self._keep if name == "segment" else ()))
            if name == "error":
                rows = self._stand_ins(rows, touched)
            counted = pc.value_counts(rows.column("call_id")).to_pylist()
            for item in counted:
                self._arrived[(item["values"], name)] += item["counts"]
                touched.add(item["values"])
            if name == "segment":
                self._place(rows)
        done = batch.filter(pc.equal(kind, "file_done"))
        for row in done.select(
            ["call_id", "source_uri", "member", "n_segments", "n_errors", "duration_s", "skipped"]
        ).to_pylist():
            if row["skipped"]:
                self.counts.skipped += row["skipped"]
                continue
            self._expected[row["call_id"]] = row
            touched.add(row["call_id"])
        for call_id in touched:
            row = self._expected.get(call_id)
            if (
                row is not None
                and self._arrived[(call_id, "segment")] == row["n_segments"]
                and self._arrived[(call_id, "error")] == row["n_errors"]
            ):
                self._finish(call_id)
        if self._ready and (
            len(self._ready) >= self.commit.max_files
            or time.monotonic() - (self._ready_since or 0) >= self.commit.every_s
        ):
            self.flush()

    def _stand_ins(self, errors: pa.Table, touched: set[str]) -> pa.Table:
        """Note the files a stage quarantined (their error rows stand for ``replaces`` segments,
        counted as arrived) and those with a transient error; returns the error rows their
        file_done row counted (the others)."""
        if "error_class" in errors.column_names:
            transient = errors.filter(pc.equal(errors.column("error_class"), "transient"))
            self._transient.update(transient.column("call_id").to_pylist())
        if "replaces" not in errors.column_names:
            return errors
        stand_in = pc.greater(pc.fill_null(errors.column("replaces"), 0), 0)
        for row in errors.filter(stand_in).select(["call_id", "replaces"]).to_pylist():
            self._quarantined.add(row["call_id"])
            self._arrived[(row["call_id"], "segment")] += row["replaces"]
            touched.add(row["call_id"])
        return errors.filter(pc.invert(stand_in))

    def _place(self, rows: pa.Table) -> None:
        for stage in PLACED_STAGES:
            column = f"{stage}_at"
            if column not in rows.column_names:
                continue
            for item in pc.value_counts(rows.column(column)).to_pylist():
                if item["values"]:
                    self.counts.placement.setdefault(stage, Counter())[item["values"]] += item[
                        "counts"
                    ]

    def _finish(self, call_id: str) -> None:
        row = self._expected.pop(call_id)
        del self._arrived[(call_id, "segment")], self._arrived[(call_id, "error")]
        if not row["n_segments"] and not row["n_errors"] and is_archive(row["source_uri"]):
            return  # an archive's own unit: its members are the files; nothing to commit
        if not self._ready:
            self._ready_since = time.monotonic()
        row["status"] = "retry" if call_id in self._transient else "done"
        row["without_segments"] = call_id in self._quarantined or call_id in self._transient
        self._quarantined.discard(call_id)
        self._transient.discard(call_id)
        self._ready[call_id] = row
        self.counts.finished += 1

    # -- committing ----------------------------------------------------------------------------

    def flush(self) -> None:
        """Commit every finished file now (on the commit thread; waits for the one before)."""
        if not self._ready:
            return
        ready, self._ready = self._ready, {}
        ids = pa.array(list(ready), pa.string())
        dropped = pa.array([c for c, r in ready.items() if r["without_segments"]], pa.string())
        split = []
        for parts in (self._segments, self._errors):
            table = _concat(parts)
            parts.clear()
            if table is None:
                split.append(None)
                continue
            mine = pc.is_in(table.column("call_id"), value_set=ids)
            rest = table.filter(pc.invert(mine))
            if rest.num_rows:
                parts.append(rest)
            taken = table.filter(mine)
            if parts is self._segments and len(dropped):  # quarantined: no segments committed
                taken = taken.filter(pc.invert(pc.is_in(taken.column("call_id"), dropped)))
            split.append(taken if taken.num_rows else None)
        self._seq += 1
        work = _Commit(self._seq, list(ready.values()), split[0], split[1])
        self._wait()
        self._inflight = self._committer.submit(self._write, work)

    def _wait(self) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            inflight.result()  # a failed commit fails the run here; nothing it had is lost

    def close(self) -> None:
        """Commit what is finished and wait for it, then stop the context labeller's actors.
        Call once, at the end of the stream."""
        try:
            self.flush()
            self._wait()
        finally:
            self._committer.shutdown(wait=True)
            if hasattr(self.context, "close"):
                self.context.close()

    def _write(self, work: _Commit) -> None:
        now = datetime.now(UTC)
        commit_id = f"{self.info.run_id}-{work.seq:06d}"
        app_id = f"annotator-sink-{self.info.run_id}"
        failpoints.point("commit:start")
        labelled = work.segments
        if labelled is not None and self.context is not None:
            labelled, work = self._label_in_context(labelled, work)
        segments = self._segment_rows(labelled, commit_id, now)
        if segments is not None:
            self.tables.append("segments", segments, app_id + "/segments", work.seq)
            failpoints.point("commit:segments")
        if work.errors is not None:
            errors = self._error_rows(work.errors, commit_id, now)
            self.tables.append("errors", errors, app_id + "/errors", work.seq)
            failpoints.point("commit:errors")
        recordings: dict[str, list[str]] = {}
        if work.segments is not None:
            pairs = (
                work.segments.select(["call_id", "recording_id"])
                .group_by(["call_id", "recording_id"])
                .aggregate([])
            )
            for call_id, recording in zip(
                pairs["call_id"].to_pylist(), pairs["recording_id"].to_pylist(), strict=True
            ):
                recordings.setdefault(call_id, []).append(recording)
        per_file = {
            name: Counter(table.column("call_id").to_pylist()) if table is not None else Counter()
            for name, table in (("segments", work.segments), ("errors", work.errors))
        }
        files = pa.Table.from_pylist(
            [
                {
                    "call_id": f["call_id"],
                    "source_uri": f["source_uri"],
                    "member": f["member"],
                    "recordings": sorted(recordings.get(f["call_id"], [])),
                    "segments": per_file["segments"][f["call_id"]],
                    "errors": per_file["errors"][f["call_id"]],
                    "duration_s": f["duration_s"],
                    "run_id": self.info.run_id,
                    "commit_id": commit_id,
                    "committed_at": now,
                    "status": f["status"],
                }
                for f in work.files
            ],
            schema=FILES,
        )
        self.tables.append("files", files, app_id, work.seq)
        failpoints.point("commit:files")
        c = self.counts
        c.commits += 1
        c.files += len(work.files)
        c.retry += sum(f["status"] == "retry" for f in work.files)
        c.recordings += sum(len(v) for v in recordings.values())
        c.segments += 0 if work.segments is None else work.segments.num_rows
        c.audio_s += sum(f["duration_s"] for f in work.files)
        if work.errors is not None:
            c.errors += work.errors.num_rows
            c.failed += [
                (r["source_uri"], r["member"], r["message"])
                for r in work.errors.select(["source_uri", "member", "message"]).to_pylist()
            ]

    def _label_in_context(self, segments: pa.Table, work: _Commit) -> tuple[pa.Table, _Commit]:
        """The context bundle's labels on the commit's segments; when that raises, file by file:
        a file that still raises is quarantined (stage ``context``), its segments not written."""
        from annotator.pipeline.failures import describe, error_row_fields, names_of

        def label(rows: pa.Table) -> pa.Table:
            failpoints.poison("context", names_of(rows))
            return self.context.label(rows)

        try:
            return label(segments), work
        except Exception as exc:
            first = exc
        ids = segments.column("call_id")
        kept, errors, failed = [], [], set()
        for call_id in dict.fromkeys(ids.to_pylist()):
            rows = segments.filter(pc.equal(ids, call_id))
            try:
                kept.append(label(rows))
            except Exception as exc:
                log.warning("context labelling quarantines %s: %s", call_id, describe(exc))
                source, member = rows["source_uri"][0].as_py(), rows["member"][0].as_py()
                errors.append(error_row_fields(call_id, source, member, "context", exc))
                failed.add(call_id)
        if not kept and len(failed) > 1:
            raise first  # no file could be labelled: the context model's fault, not theirs
        added = _columns(pa.Table.from_pylist(errors), ERRORS)
        work = _Commit(
            work.seq,
            work.files,
            work.segments.filter(pc.invert(pc.is_in(ids, pa.array(sorted(failed))))),
            added
            if work.errors is None
            else pa.concat_tables([work.errors, added.cast(work.errors.schema)]),
        )
        return (pa.concat_tables(kept) if kept else None), work

    def _segment_rows(
        self, rows: pa.Table | None, commit_id: str, now: datetime
    ) -> pa.Table | None:
        if rows is None:
            return None
        rows = rows.sort_by([("recording_id", "ascending"), ("segment_index", "ascending")])
        n = rows.num_rows
        index = pc.utf8_lpad(pc.cast(rows.column("segment_index"), pa.string()), 6, "0")
        filled = {
            "run_id": pa.repeat(self.info.run_id, n),
            "segment_id": pc.binary_join_element_wise(rows.column("recording_id"), index, "-"),
            "bundle_kind": pa.repeat(self.info.bundle_kind, n),
            "bundle_version": pa.repeat(self.info.bundle_version, n),
            "asr_model": pa.repeat(self.info.asr_model, n),
            "llm_model": pa.repeat(self.info.llm_model, n),
            "processed_at": pa.repeat(pa.scalar(now, SEGMENTS.field("processed_at").type), n),
            "commit_id": pa.repeat(commit_id, n),
        }
        return _assemble(rows, filled, SEGMENTS)

    def _error_rows(self, rows: pa.Table, commit_id: str, now: datetime) -> pa.Table:
        n = rows.num_rows
        filled = {
            "run_id": pa.repeat(self.info.run_id, n),
            "at": pa.repeat(pa.scalar(now, ERRORS.field("at").type), n),
            "commit_id": pa.repeat(commit_id, n),
        }
        return _assemble(rows, filled, ERRORS)

    def unfinished(self) -> list[str]:
        """Files that started but never finished (a run that ended early)."""
        started = {call_id for call_id, _ in self._arrived} | set(self._expected)
        return sorted(started)


def _assemble(rows: pa.Table, filled: dict[str, Any], schema: pa.Schema) -> pa.Table:
    arrays = [filled[n] if n in filled else rows.column(n) for n in schema.names]
    return pa.table(arrays, names=schema.names).cast(schema)
