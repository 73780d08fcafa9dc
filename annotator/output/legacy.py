"""Converting an output written by annotator 0.1 (one Parquet file and one marker per input file).

That layout: ``segments/<id[:2]>/<call_id>.parquet``, ``errors/<id[:2]>/<call_id>.parquet``,
``_ledger/<id[:2]>/<call_id>.json`` (a file was committed when its marker existed) and
``runs/<run_id>.parquet``. :func:`convert` appends the committed files' rows to the Delta tables
in commits of many files, then deletes the old objects, the markers last. It can be interrupted
and rerun: files already in the ``files`` table are not converted twice, and until the markers
are gone the output counts as unconverted (``annotate`` and ``query`` refuse it).
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Callable
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from annotator.config import S3Config
from annotator.output.tables import LEGACY_MARKERS, OutputTables
from annotator.schema import ERRORS, FILES, RUNS, SEGMENTS
from annotator.storage import filesystem

log = logging.getLogger("annotator.output")


def _fill(table: pa.Table, schema: pa.Schema, **constants: str) -> pa.Table:
    """``table`` in ``schema``'s columns: missing ones from ``constants`` or null."""
    n = table.num_rows
    arrays = []
    for field in schema:
        if field.name in table.column_names:
            arrays.append(table.column(field.name))
        elif field.name in constants:
            arrays.append(pa.repeat(constants[field.name], n))
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.table(arrays, names=schema.names).cast(schema)


def convert(
    uri: str,
    s3: S3Config | None = None,
    files_per_commit: int = 2000,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Convert ``uri`` in place; returns counts of what was converted and removed."""
    s3 = s3 or S3Config()
    tables = OutputTables(uri, s3)
    fs, root = filesystem(tables.uri, s3)
    root = root.rstrip("/")
    markers_dir = posixpath.join(root, LEGACY_MARKERS)
    if not fs.exists(markers_dir):
        return {"files": 0, "segments": 0, "errors": 0, "runs": 0, "removed": 0}
    markers = sorted(p for p in fs.find(markers_dir) if p.endswith(".json"))
    done = set(tables.committed_ids())
    todo = [p for p in markers if posixpath.basename(p)[: -len(".json")] not in done]
    stamp = datetime.now(UTC)
    session = f"convert-{stamp:%Y%m%dT%H%M%SZ}"
    counts = {"files": 0, "segments": 0, "errors": 0, "runs": 0, "removed": 0}

    def read_parquet(table: str, call_id: str) -> pa.Table:
        with fs.open(posixpath.join(root, table, call_id[:2], f"{call_id}.parquet"), "rb") as f:
            return pq.read_table(f)

    for seq, start in enumerate(range(0, len(todo), files_per_commit), start=1):
        chunk = todo[start : start + files_per_commit]
        commit_id = f"{session}-{seq:06d}"
        records, segments, errors = [], [], []
        for path in chunk:
            with fs.open(path, "rb") as handle:
                record = json.loads(handle.read())
            records.append(record)
            call_id = record["call_id"]
            if record["segments"]:
                segments.append(
                    _fill(read_parquet("segments", call_id), SEGMENTS, commit_id=commit_id)
                )
            if record["errors"]:
                errors.append(
                    _fill(
                        read_parquet("errors", call_id),
                        ERRORS,
                        call_id=call_id,
                        commit_id=commit_id,
                    )
                )
        if segments:
            table = pa.concat_tables(segments)
            tables.append("segments", table, session + "/segments", seq)
            counts["segments"] += table.num_rows
        if errors:
            table = pa.concat_tables(errors)
            tables.append("errors", table, session + "/errors", seq)
            counts["errors"] += table.num_rows
        files = pa.Table.from_pylist(
            [
                {
                    "call_id": r["call_id"],
                    "source_uri": r["source_uri"],
                    "member": r["member"],
                    "recordings": r["recordings"],
                    "segments": r["segments"],
                    "errors": r["errors"],
                    "duration_s": r["duration_s"],
                    "run_id": r["run_id"],
                    "commit_id": commit_id,
                    "committed_at": datetime.fromisoformat(r["committed_at"]),
                }
                for r in records
            ],
            schema=FILES,
        )
        tables.append("files", files, session, seq)
        counts["files"] += len(records)
        if on_progress is not None:
            on_progress(counts["files"], len(todo))

    old_runs = [  # Delta's own data files are part-*.parquet; the old ones <run_id>.parquet
        p
        for p in fs.glob(posixpath.join(root, "runs", "*.parquet"))
        if not posixpath.basename(p).startswith("part-")
    ]
    known = set(tables.read("runs", ["run_id"])["run_id"].to_pylist())
    for path in old_runs:
        with fs.open(path, "rb") as handle:
            run = pq.read_table(handle)
        fresh = [r for r in run.to_pylist() if r["run_id"] not in known]
        if fresh:
            tables.append("runs", pa.Table.from_pylist(fresh, schema=RUNS), f"{session}/runs", 0)
            counts["runs"] += len(fresh)
            known.update(r["run_id"] for r in fresh)

    # The old objects: files in two-character shard folders (Delta writes none there) and the
    # per-run files; the markers last, so an interrupted removal is resumed by the next call.
    old = list(old_runs)
    for table in ("segments", "errors"):
        base = posixpath.join(root, table)
        if fs.exists(base):
            old += [
                p
                for p in fs.find(base)
                if posixpath.basename(posixpath.dirname(p)) != "_delta_log"
                and len(posixpath.basename(posixpath.dirname(p))) == 2
            ]
    for path in old:
        fs.rm_file(path)
    counts["removed"] = len(old)
    fs.rm(markers_dir, recursive=True)
    log.info("converted %s: %s", uri, counts)
    return counts
