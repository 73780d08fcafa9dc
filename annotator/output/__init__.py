"""An annotator output: Delta Lake tables (``segments``, ``errors``, ``files``, ``runs``).

``tables.py`` opens, creates and appends to them; ``compact.py`` merges a night's commits into
large files; ``legacy.py`` converts the per-file layout of annotator 0.1; ``failpoints.py`` names
the points at which tests kill a writer. Rows to write come from ``annotator.pipeline.sink``.
"""
