"""The Delta Lake tables of one output (a local directory or an ``s3://`` prefix).

``<output>/segments``, ``<output>/errors``, ``<output>/files`` and ``<output>/runs`` are each a
Delta table (delta-rs, ``deltalake``). ``files`` is the ledger: one row per committed input file,
with the ``commit_id`` its segment and error rows carry. A file is committed when its ``files``
row is; rows whose (call_id, commit_id) has no ``files`` row (a writer killed between its
appends) or whose ``files`` row was superseded (``--force``, or two runs that did one file at
once: the later commit wins) are never shown by the views (``sql/views.sql``).

S3 needs no lock service: delta-rs commits a version with a conditional put
(``conditional_put: etag``; AWS S3, MinIO, R2 and moto honour ``If-None-Match``). Each append
carries an application-transaction id (writer, sequence number), so a commit whose answer was
lost is recognised on retry instead of being written twice.
"""

from __future__ import annotations

import logging
import posixpath
import time
from datetime import datetime
from typing import Any

import pyarrow as pa

from annotator.config import S3Config
from annotator.schema import TABLES

log = logging.getLogger("annotator.output")

LEGACY_MARKERS = "_ledger"  # the per-file layout of annotator 0.1 (one JSON marker per file)
COMMIT_RETRIES = 5


class OutputError(RuntimeError):
    """The output cannot be used as it is (e.g. it is in the old layout); the message says why."""


def storage_options(uri: str, s3: S3Config) -> dict[str, str]:
    """delta-rs (object_store) options for ``uri``: empty for local paths."""
    if not uri.startswith("s3://"):
        return {}
    options = {"conditional_put": "etag"}
    if s3.endpoint_url:
        options["AWS_ENDPOINT_URL"] = s3.endpoint_url
        if s3.endpoint_url.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    if s3.key is not None:
        options["AWS_ACCESS_KEY_ID"] = s3.key
        options["AWS_SECRET_ACCESS_KEY"] = s3.secret or ""
    options["AWS_REGION"] = s3.region or "us-east-1"
    return options


class OutputTables:
    """The tables of one output. ``as_of`` (a datetime) opens each as it was then (time travel)."""

    def __init__(self, uri: str, s3: S3Config | None = None, as_of: datetime | None = None):
        self.uri = str(uri).rstrip("/")
        self.s3 = s3 or S3Config()
        self.options = storage_options(self.uri, self.s3)
        self.as_of = as_of
        self._open: dict[str, Any] = {}

    def table_uri(self, name: str) -> str:
        return posixpath.join(self.uri, name)

    def _load(self, name: str):
        """The DeltaTable, or None if there is none. (Not ``DeltaTable.is_deltatable``: it keeps
        Python's GIL while it waits on the network, which stalls an S3 server in this process.)"""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.table_uri(name), storage_options=self.options)
        except TableNotFoundError:
            return None

    def is_legacy(self) -> bool:
        """True when the output still has annotator 0.1's per-file markers (not converted)."""
        from annotator.storage import filesystem

        fs, root = filesystem(self.uri, self.s3)
        return fs.exists(posixpath.join(root.rstrip("/"), LEGACY_MARKERS))

    def refuse_legacy(self) -> None:
        if self.is_legacy():
            raise OutputError(
                f"{self.uri} is in the per-file layout of annotator 0.1 (one Parquet file and "
                f"one {LEGACY_MARKERS}/ marker per input file); convert it once with "
                f"`annotator convert {self.uri}`"
            )

    def table(self, name: str, create: bool = False):
        """The DeltaTable ``name`` (None if it does not exist and ``create`` is false)."""
        from deltalake import DeltaTable

        if name in self._open:
            return self._open[name]
        dt = self._load(name)
        if dt is None:
            if not create:
                return None
            try:
                DeltaTable.create(
                    self.table_uri(name),
                    schema=TABLES[name],
                    mode="ignore",
                    storage_options=self.options,
                )
            except Exception:  # another writer created it a moment ago: use theirs
                if self._load(name) is None:
                    raise
            dt = self._load(name)
        if self.as_of is not None:
            try:
                dt.load_as_version(self.as_of)
            except Exception:  # the table did not exist yet at that time
                return None
        self._open[name] = dt
        return dt

    def append(self, name: str, data: pa.Table, app_id: str, version: int) -> None:
        """Append ``data`` to table ``name`` as one commit, exactly once per (app_id, version).

        Concurrent appends by other writers are retried by delta-rs itself; a failure whose
        commit nevertheless landed (the answer was lost) is recognised by the transaction id."""
        from deltalake import CommitProperties, Transaction, WriterProperties, write_deltalake

        dt = self.table(name, create=True)
        properties = CommitProperties(
            app_transactions=[Transaction(app_id=app_id, version=version)], max_commit_retries=50
        )
        for attempt in range(COMMIT_RETRIES):
            try:
                write_deltalake(
                    dt,
                    data.cast(TABLES[name]),
                    mode="append",
                    # A column added to the schema since the table was made (schema.ADDED_COLUMNS)
                    # is added to the table by this commit.
                    schema_mode="merge",
                    commit_properties=properties,
                    writer_properties=WriterProperties(compression="ZSTD"),
                )
                return
            except Exception as exc:
                dt.update_incremental()
                landed = dt.transaction_version(app_id)
                if landed is not None and landed >= version:
                    return
                if attempt == COMMIT_RETRIES - 1:
                    raise
                log.warning("commit to %s failed (%s); retrying", name, exc)
                time.sleep(0.5 * 2**attempt)

    def file_uris(self, name: str) -> list[str]:
        """The Parquet files of the table's current (or ``as_of``) snapshot."""
        dt = self.table(name)
        return [] if dt is None else dt.file_uris()

    def committed_ids(self, retry_errors: bool = False) -> list[str]:
        """call_ids of every input file the ledger has as done: its latest row's ``status`` is
        not ``retry`` (a transient error kept it from being done), and, with ``retry_errors``,
        that row has no errors (a quarantined file is done again)."""
        dt = self.table("files")
        if dt is None:
            return []
        import pyarrow.compute as pc

        present = set(dt.schema().to_arrow().names)
        columns = ["call_id", "committed_at", "commit_id", "errors"]
        columns += ["status"] if "status" in present else []
        ledger = dt.to_pyarrow_table(columns=columns)
        if "status" not in present and not retry_errors:  # written before status: all done
            return pc.unique(ledger["call_id"]).to_pylist()
        latest = ledger.sort_by(
            [("call_id", "ascending"), ("committed_at", "descending"), ("commit_id", "descending")]
        )
        ids = latest["call_id"].combine_chunks()
        if not len(ids):
            return []
        previous = pa.concat_arrays([pa.nulls(1, ids.type), ids.slice(0, len(ids) - 1)])
        keep = pc.fill_null(pc.not_equal(ids, previous), True)  # each call_id's latest row
        if "status" in present:
            keep = pc.and_(keep, pc.fill_null(pc.not_equal(latest["status"], "retry"), True))
        rows = latest.filter(keep)
        if retry_errors:
            rows = rows.filter(pc.equal(rows["errors"], 0))
        return rows["call_id"].to_pylist()

    def read(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """A whole table as Arrow (small tables: runs, tests). Empty with its schema if absent."""
        dt = self.table(name)
        if dt is None:
            schema = TABLES[name]
            empty = pa.Table.from_batches([], schema=schema)
            return empty.select(columns) if columns else empty
        return dt.to_pyarrow_table(columns=columns)
