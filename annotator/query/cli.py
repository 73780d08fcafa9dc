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


def print_relation(relation, fmt: str = "table", dest: Path | None = None) -> None:
    table = relation.to_arrow_table()
    if fmt == "parquet":
        if dest is None:
            raise click.UsageError("--format parquet needs --output FILE")
        import pyarrow.parquet as pq

        pq.write_table(table, dest)
        return
    if fmt == "csv":
        text = table.to_pandas().to_csv(index=False)
    elif fmt == "json":
        text = table.to_pandas().to_json(orient="records", lines=True, date_format="iso")
    else:
        from rich.console import Console
        from rich.table import Table

        view = Table(*table.column_names, show_lines=False)
        for row in table.to_pylist():
            view.add_row(*("" if v is None else str(v) for v in row.values()))
        Console(file=dest.open("w") if dest else None, width=200 if dest else None).print(view)
        return
    if dest:
        dest.write_text(text)
    else:
        click.echo(text, nl=False)


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
        print_relation(relation, fmt, dest)


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
