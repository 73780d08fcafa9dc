"""Compaction: a night's commits (one small Parquet file per table per commit) become a few large
files, and files no snapshot needs any more are removed.

Each table is compacted by delta-rs (``optimize.compact``), which commits a new version that
replaces the small files with the merged ones, row for row. A writer appending at the same time
does not conflict with it (appends touch none of the files compaction removes); a kill before the
compaction's commit leaves the old version in place, and its half-written files are unreferenced
until a vacuum removes them (a full vacuum: files no commit ever named too). Vacuum removes only files unreferenced for longer than
``retain_hours``, so a concurrent writer's files, written just before its commit, are never taken;
time travel (``annotator query --as-of``) reaches back as far as the files are retained.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from annotator.config import S3Config
from annotator.output import failpoints
from annotator.output.tables import OutputTables
from annotator.schema import TABLES

log = logging.getLogger("annotator.output")
DEFAULT_RETAIN_HOURS = 168


@dataclass
class Compacted:
    table: str
    files_before: int
    files_after: int
    removed: int  # files vacuum deleted


def compact(
    uri: str,
    s3: S3Config | None = None,
    retain_hours: float = DEFAULT_RETAIN_HOURS,
    target_mib: int | None = None,
) -> list[Compacted]:
    """Compact every table of the output at ``uri``, then vacuum; returns what changed."""
    tables = OutputTables(uri, s3)
    tables.refuse_legacy()
    out = []
    for name in TABLES:
        dt = tables.table(name)
        if dt is None:
            continue
        before = len(dt.file_uris())
        _compact(dt, target_mib * 1024**2 if target_mib else None)
        failpoints.point(f"compact:{name}")
        dt.create_checkpoint()  # readers then load one file, not every commit's JSON
        removed = dt.vacuum(
            retention_hours=int(retain_hours),
            dry_run=False,
            enforce_retention_duration=False,
            # Also the files no commit ever referenced (a writer killed between writing its
            # Parquet file and its commit), once they are older than the retention.
            full=True,
        )
        failpoints.point(f"vacuum:{name}")
        dt.cleanup_metadata()  # log entries older than the log retention (30 days)
        dt.update_incremental()
        out.append(Compacted(name, before, len(dt.file_uris()), len(removed)))
        log.info(
            "compacted %s: %d → %d files, %d removed",
            name,
            before,
            out[-1].files_after,
            len(removed),
        )
    return out


# Rows per row group of a compacted file. A reader (DuckDB) holds about one row group per thread,
# whatever it was asked, so this sets an export's working set: delta-rs's default (1,048,576
# rows, ~110 MiB of a night's segments decompressed) made an export of a compacted output need
# 1.8x the memory of an uncompacted one; at 65,536 rows (~9 MiB) DuckDB still held ~60 MiB per
# thread, at 16,384 (~2.2 MiB) ~35 MiB (benchmarks/query_export.py), and column scans stay in
# large enough pieces.
ROW_GROUP_ROWS = 16_384


def _compact(dt, target_size: int | None, attempts: int = 5) -> None:
    """optimize.compact, tried again if a concurrent commit made it conflict (a writer that
    removed files it read: another compaction); appends never do."""
    from deltalake import WriterProperties
    from deltalake.exceptions import CommitFailedError

    for attempt in range(attempts):
        try:
            dt.optimize.compact(
                target_size=target_size,
                writer_properties=WriterProperties(
                    max_row_group_size=ROW_GROUP_ROWS, compression="ZSTD"
                ),
            )
            return
        except CommitFailedError:
            if attempt == attempts - 1:
                raise
            log.warning("compaction of %s met a concurrent commit; trying again", dt.table_uri)
            dt.update_incremental()
