"""What ``annotator query`` does, kept apart from click so the library stays usable alone."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from annotator.config import S3Config
from annotator.query.duckdb import Annotations, QueryError, named_queries


def _params(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not K=V", param_hint="--param")
        out[key.strip()] = value
    return out


# Rows per Arrow batch while exporting: what the CLI holds at a time, whatever the result's size.
EXPORT_BATCH_ROWS = 8_192
# Rows per row group of a Parquet export: four batches gathered, then written. The writer keeps
# every row group's metadata until it closes the file (a 6 M-row export in 8,192-row groups:
# a 2.7 MiB footer, and RSS crept ~45 MiB over the export), so fewer groups, less that grows
# with the result; four batches held is the fixed price (benchmarks/query_export.py).
EXPORT_ROW_GROUP_ROWS = 32_768
# Rows the table format prints on a terminal unless --limit says otherwise.
TABLE_ROWS = 100


def print_relation(
    relation, fmt: str = "table", dest: Path | None = None, limit: int | None = TABLE_ROWS
) -> None:
    """Write ``relation``'s rows as ``fmt`` to ``dest`` (stdout when None), streamed: DuckDB's
    record-batch reader feeds a Parquet writer (row groups of four batches), or CSV / JSON lines
    one batch at a time, so an export of a whole night's segments holds a few batches in memory,
    not the result. The ``table`` format prints at most ``limit`` rows (None or 0: all) and says
    when there were more."""
    if fmt == "parquet" and dest is None:
        raise click.UsageError("--format parquet needs --output FILE")
    if fmt == "table":
        _print_table(relation, dest, limit or None)
        return
    reader = relation.fetch_record_batch(EXPORT_BATCH_ROWS)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        with pq.ParquetWriter(dest, reader.schema) as writer:
            held, rows = [], 0
            for batch in reader:
                held.append(batch)
                rows += batch.num_rows
                if rows >= EXPORT_ROW_GROUP_ROWS:
                    writer.write_table(pa.Table.from_batches(held), row_group_size=rows)
                    held, rows = [], 0
            if held:
                writer.write_table(pa.Table.from_batches(held), row_group_size=rows)
        return
    out = dest.open("w") if dest else None
    try:
        first = True
        for batch in _batches(reader):
            frame = batch.to_pandas()
            if fmt == "csv":
                text = frame.to_csv(index=False, header=first)
            else:
                text = frame.to_json(orient="records", lines=True, date_format="iso")
                if text and not text.endswith("\n"):
                    text += "\n"
            first = False
            if out is not None:
                out.write(text)
            else:
                click.echo(text, nl=False)
    finally:
        if out is not None:
            out.close()


def _batches(reader):
    """The reader's batches; one empty batch of its schema when it has none, so a CSV export of
    no rows still has its header."""
    import pyarrow as pa

    empty = True
    for batch in reader:
        empty = False
        yield batch
    if empty:
        yield pa.RecordBatch.from_pylist([], schema=reader.schema)


def _print_table(relation, dest: Path | None, limit: int | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = (relation.limit(limit + 1) if limit else relation).to_arrow_table()
    more = limit is not None and table.num_rows > limit
    if more:
        table = table.slice(0, limit)
    view = Table(*table.column_names, show_lines=False)
    for row in table.to_pylist():
        view.add_row(*("" if v is None else str(v) for v in row.values()))
    console = Console(file=dest.open("w") if dest else None, width=200 if dest else None)
    console.print(view)
    if more:
        console.print(
            f"(the first {limit} rows; --limit N or --limit 0 for more, or --format "
            "csv|json|parquet --output FILE for all)"
        )


def run(
    output: str,
    sql: str | None,
    name: str | None,
    params: tuple[str, ...],
    fmt: str,
    dest: Path | None,
    list_queries: bool,
    shell: bool,
    s3: S3Config,
    as_of=None,
    limit: int | None = TABLE_ROWS,
) -> None:
    if list_queries:
        for query in named_queries().values():
            args = ", ".join(f"{k}={v}" for k, v in query.params.items())
            click.echo(f"{query.name}({args})\n    {query.answers}")
        return
    if sum(bool(x) for x in (sql, name, shell)) != 1:
        raise click.UsageError("give SQL, --name QUERY or --shell (exactly one)")
    try:
        ann = Annotations(output, s3, as_of=as_of)
        if shell:
            _shell(ann)
            return
        relation = ann.named(name, **_params(params)) if name else ann.sql(sql)
    except QueryError as exc:
        raise click.ClickException(str(exc)) from None
    if relation is not None:
        print_relation(relation, fmt, dest, limit)


def _shell(ann: Annotations) -> None:
    """A small SQL prompt: statements end with ';', errors are shown and the session goes on."""
    click.echo(
        "views: segments, errors, files, runs, recordings, turns. End statements with ';', quit with .quit"
    )
    buffer = ""
    while True:
        try:
            line = input("annotator> " if not buffer else "      ...> ")
        except EOFError:
            click.echo()
            return
        if not buffer and line.strip() in (".quit", ".exit", "\\q"):
            return
        buffer += line + "\n"
        if not buffer.rstrip().endswith(";"):
            continue
        statement, buffer = buffer, ""
        try:
            relation = ann.sql(statement)
            if relation is not None:
                print_relation(relation)
        except QueryError as exc:
            click.echo(f"error: {exc}", err=True)
        sys.stdout.flush()
