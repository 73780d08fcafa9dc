"""SQL over annotator output with DuckDB."""

from annotator.query.duckdb import Annotations, NamedQuery, QueryError, named_queries

__all__ = ["Annotations", "NamedQuery", "QueryError", "named_queries"]
