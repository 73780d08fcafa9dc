"""DuckDB over an annotator output: views from sql/views.sql, named queries from sql/queries/.

The connection is read-only in two ways. DuckDB itself may touch no file outside the output
(``allowed_directories`` + ``enable_external_access = false``, then the configuration is locked), so
``read_csv('/etc/passwd')``, ``COPY … TO``, ``ATTACH`` and ``INSTALL`` fail inside DuckDB; and only
``SELECT``-like statements are accepted at all, so ``DROP``/``CREATE``/``SET`` get a clear refusal
before they run. ``s3://`` outputs are read through s3fs registered as an fsspec filesystem: no
httpfs extension, nothing downloaded.

The tables are Delta tables; DuckDB reads the Parquet files of their current snapshot (or of the
snapshot at ``as_of``), listed from the Delta log by delta-rs, so no delta extension is needed
and no directory is listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from annotator.config import S3Config
from annotator.schema import ADDED_COLUMNS, TABLES

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_PARAM = re.compile(r"^--\s*param:\s*(\w+)\s*=\s*(.*?)\s*$")
_ANSWERS = re.compile(r"^--\s*answers:\s*(.*)$")


class QueryError(ValueError):
    """A query that is refused or fails; the message is for the person who typed it."""


@dataclass(frozen=True)
class NamedQuery:
    """One file of sql/queries/: its name, what it answers, its parameters with defaults."""

    name: str
    answers: str
    params: dict[str, str]
    sql: str


def named_queries(sql_dir: Path = SQL_DIR) -> dict[str, NamedQuery]:
    queries = {}
    for path in sorted((sql_dir / "queries").glob("*.sql")):
        text = path.read_text()
        params, answers = {}, ""
        for line in text.splitlines():
            if not line.startswith("--"):
                break
            if m := _PARAM.match(line):
                params[m.group(1)] = m.group(2)
            elif m := _ANSWERS.match(line):
                answers = m.group(1)
        queries[path.stem] = NamedQuery(path.stem, answers, params, text)
    return queries


def _coerce(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


class Annotations:
    """An annotator output opened for SQL. ``sql()`` returns a DuckDB relation; ``arrow()`` a table.

    Example (a notebook)::

        ann = Annotations("s3://bucket/annotations", S3Config(endpoint_url=...))
        ann.sql("SELECT emotion, count(*) FROM segments GROUP BY 1").df()
        ann.named("unsure_segments", below=0.4).arrow()

    ``as_of`` opens every table as it was at that time (Delta time travel): e.g. the labels an
    earlier bundle gave before a ``--force`` rerun replaced them.
    """

    def __init__(
        self,
        output: str | Path,
        s3: S3Config | None = None,
        sql_dir: Path = SQL_DIR,
        as_of: datetime | None = None,
    ) -> None:
        from annotator.output.tables import OutputError, OutputTables

        self.output = str(output).rstrip("/")
        self.sql_dir = sql_dir
        self.con = duckdb.connect(":memory:")
        if self.output.startswith("s3://"):
            from annotator.storage import filesystem

            fs, _ = filesystem(self.output, s3 or S3Config())
            self.con.register_filesystem(fs)
            root = self.output
        else:
            root = str(Path(self.output).resolve())
            if not Path(root).is_dir():
                raise QueryError(f"{output} is not an annotator output directory")
            self.output = root
        self.tables = OutputTables(self.output, s3, as_of)
        try:
            self.tables.refuse_legacy()
        except OutputError as exc:
            raise QueryError(str(exc)) from None
        views = (sql_dir / "views.sql").read_text()
        # The ledger's snapshot first: a commit appends rows before its files rows, so every
        # commit that snapshot names has its rows in the later snapshots of segments and errors.
        # (Not str.format: the SQL has its own braces, struct literals.)
        for name in ("files", "segments", "errors", "runs"):
            views = views.replace("{" + name + "}", self._source(name))
        self.con.execute(views)
        self.con.execute(f"SET allowed_directories = ['{root}/']")
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    def _source(self, table: str) -> str:
        files = self.tables.file_uris(table)
        if files:
            listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            return self._with_added_columns(
                table, f"read_parquet([{listed}], union_by_name = true)"
            )
        # No table or no rows yet: an empty relation with the documented columns.
        empty = pa.Table.from_batches([], schema=TABLES[table])
        self.con.register(f"_empty_{table}", empty)
        return f"_empty_{table}"

    def _with_added_columns(self, table: str, source: str) -> str:
        """``source`` with the columns added since older outputs were written
        (``schema.ADDED_COLUMNS``) holding their documented value where a row has none: in
        files written before the column existed (NULL under union_by_name) or in a snapshot
        none of whose files has it."""
        added = ADDED_COLUMNS.get(table)
        if not added:
            return source
        present = {
            row[0] for row in self.con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        }
        replaced, appended = [], []
        for column, value in added.items():
            if value is None:  # NULL where absent, as it already is where present
                if column not in present:
                    appended.append(f"NULL AS {column}")
                continue
            literal = "'" + value.replace("'", "''") + "'"
            if column in present:
                replaced.append(f"coalesce({column}, {literal}) AS {column}")
            else:
                appended.append(f"{literal} AS {column}")
        select = "*" + (f" REPLACE ({', '.join(replaced)})" if replaced else "")
        return f"(SELECT {', '.join([select, *appended])} FROM {source})"

    def sql(
        self, query: str, params: dict[str, Any] | None = None
    ) -> duckdb.DuckDBPyRelation | None:
        """Run one read-only statement; returns its relation."""
        try:
            statements = self.con.extract_statements(query)
        except duckdb.Error as exc:
            raise QueryError(str(exc)) from None
        if len(statements) != 1:
            raise QueryError(f"give one statement at a time (got {len(statements)})")
        kind = statements[0].type
        if kind not in ALLOWED:
            raise QueryError(
                f"{kind.name} statements are refused: queries over annotations are read-only "
                "(SELECT, WITH … SELECT, EXPLAIN)"
            )
        try:
            return self.con.sql(query, params=params) if params else self.con.sql(query)
        except duckdb.PermissionException as exc:
            raise QueryError(
                f"refused: only the output {self.output} may be read ({exc})"
            ) from None
        except duckdb.Error as exc:
            raise QueryError(str(exc)) from None

    def named(self, name: str, **params: Any) -> duckdb.DuckDBPyRelation:
        queries = named_queries(self.sql_dir)
        if name not in queries:
            raise QueryError(f"no named query {name!r}; known: {', '.join(queries)}")
        query = queries[name]
        unknown = set(params) - set(query.params)
        if unknown:
            raise QueryError(
                f"query {name} has no parameter {', '.join(sorted(unknown))}; "
                f"it takes: {', '.join(query.params) or 'none'}"
            )
        values = {k: _coerce(str(params.get(k, v))) for k, v in query.params.items()}
        return self.sql(query.sql, values or None)

    def arrow(self, query: str, params: dict[str, Any] | None = None) -> pa.Table:
        return self.sql(query, params).to_arrow_table()

    def close(self) -> None:
        self.con.close()
