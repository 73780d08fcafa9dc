"""Query benchmark: a group-by through `annotator query` over an output of 100,000 input files
(synthetic rows, 60 segments each), as a night of commits left it and after `annotator compact`.

The output is written through the real sink in commits of 200 files (what a cluster doing ~7
files/s commits every 30 s), so before compaction each table has one small file per commit.
Rows of 1,000 synthetic files are made once and given new ids for each further 1,000.

    python -m benchmarks.query [--files 100000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.common import write_result

GROUP_BY = (
    "SELECT emotion, count(*) AS segments, round(sum(end_s - start_s) / 3600, 1) AS hours, "
    "round(avg(emotion_confidence), 3) AS confidence FROM segments GROUP BY emotion ORDER BY 1"
)


def _renamed(batch: pa.Table, chunk: int, per_chunk: int) -> pa.Table:
    """``batch`` with every id moved to chunk ``chunk`` (ids stay 16 hex digits)."""
    out = batch
    for column in ("call_id", "recording_id"):
        values = batch.column(column)
        originals = pc.unique(values)
        index = pc.index_in(values, value_set=originals)
        fresh = pa.array(
            [f"{chunk:06x}{abs(hash(v)) % 16**10:010x}" for v in originals.to_pylist()], pa.string()
        )
        out = out.set_column(out.schema.get_field_index(column), column, pc.take(fresh, index))
    return out


def _timed_query(output: str, repeat: int = 3) -> dict:
    """Wall time of `annotator query` (the CLI, a fresh process each time) and of the query alone
    in an open connection (best of ``repeat``)."""
    cli = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "annotator.cli", "query", output, GROUP_BY, "--format", "csv"],
            check=True,
            capture_output=True,
        )
        cli.append(time.perf_counter() - t0)
    from annotator.query import Annotations

    t0 = time.perf_counter()
    ann = Annotations(output)
    opened = time.perf_counter() - t0
    inner = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = ann.sql(GROUP_BY).fetchall()
        inner.append(time.perf_counter() - t0)
    files = {t: len(ann.tables.file_uris(t)) for t in ("segments", "errors", "files")}
    return {
        "cli_s": round(min(cli), 2),
        "open_s": round(opened, 2),
        "query_s": round(min(inner), 3),
        "parquet_files": files,
        "segments": sum(r[1] for r in rows),
    }


def write_output(output: str, files: int, files_per_commit: int = 200):
    """An output of ``files`` synthetic input files (60 segments each) written through the real
    sink in commits of ``files_per_commit``; returns the sink's counts and the seconds taken."""
    from annotator.config import CommitConfig
    from annotator.output.tables import OutputTables
    from annotator.pipeline import synthetic
    from annotator.pipeline.sink import RunInfo, Sink

    per_chunk = min(1000, files)
    template = list(synthetic.batches(0, per_chunk, 60, error_every=500))
    info = RunInfo(f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-bench", "synthetic", "a", "b")
    sink = Sink(OutputTables(output), info, CommitConfig(every_s=1e9, max_files=files_per_commit))
    t0 = time.perf_counter()
    for chunk in range(files // per_chunk):
        for batch in template:
            sink.add(_renamed(batch, chunk, per_chunk))
        if chunk % 10 == 9:
            print(f"{(chunk + 1) * per_chunk} files committed", flush=True)
    sink.close()
    return sink.counts, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--files-per-commit", type=int, default=200)
    args = parser.parse_args()

    from annotator.output.compact import compact

    with tempfile.TemporaryDirectory() as tmp:
        output = f"{tmp}/out"
        counts, write_s = write_output(output, args.files, args.files_per_commit)
        before = _timed_query(output)
        print("before compaction", before, flush=True)
        t0 = time.perf_counter()
        compacted = compact(output, retain_hours=0)
        compact_s = time.perf_counter() - t0
        after = _timed_query(output)
        print("after compaction", after, flush=True)
        assert before["segments"] == after["segments"] == np.int64(counts.segments)
        write_result(
            "query",
            {
                "input_files": counts.files,
                "segments": counts.segments,
                "commits": counts.commits,
                "write_s": round(write_s, 1),
                "query": GROUP_BY,
                "before_compaction": before,
                "compact_s": round(compact_s, 1),
                "compacted": {c.table: [c.files_before, c.files_after] for c in compacted},
                "after_compaction": after,
                "goal_after_s": 2.0,
            },
        )


if __name__ == "__main__":
    main()
