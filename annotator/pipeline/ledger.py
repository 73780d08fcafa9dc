"""The ledger: which files (the unit of commit) an output already holds, committed.

One small JSON marker per committed file, ``_ledger/<call_id[:2]>/<call_id>.json``, written after
the file's Parquet rows. A marker exists only if every row it counts is in place; a file without
a marker is redone by the next run and its Parquet files are overwritten under the same names.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from typing import Any

from annotator.audio.sources import filesystem
from annotator.config import S3Config

LEDGER_DIR = "_ledger"


class Output:
    """An output location (local directory or ``s3://`` prefix) and atomic writes into it."""

    def __init__(self, uri: str, s3: S3Config) -> None:
        self.uri = uri.rstrip("/")
        self.fs, self.root = filesystem(self.uri, s3)
        self.root = self.root.rstrip("/")
        self.local = self.fs.protocol in ("file", ("file", "local"))

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Readers see the whole object or nothing: local files are written under a temporary
        name and renamed; an S3 PUT is atomic by itself."""
        path = self.path(relative)
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)

    def clean_temporaries(self) -> int:
        """Remove temporary files a killed run left behind (local outputs only)."""
        if not self.local or not self.fs.exists(self.root):
            return 0
        stale = [p for p in self.fs.find(self.root) if ".tmp-" in posixpath.basename(p)]
        for path in stale:
            self.fs.rm_file(path)
        return len(stale)


class Ledger:
    def __init__(self, output: Output) -> None:
        self.output = output

    @staticmethod
    def _relative(call_id: str) -> str:
        return posixpath.join(LEDGER_DIR, call_id[:2], f"{call_id}.json")

    def done(self) -> frozenset[str]:
        """call_ids of every committed file."""
        base = self.output.path(LEDGER_DIR)
        if not self.output.fs.exists(base):
            return frozenset()
        names = (posixpath.basename(p) for p in self.output.fs.find(base))
        return frozenset(n[: -len(".json")] for n in names if n.endswith(".json"))

    def mark(self, call_id: str, record: dict[str, Any]) -> None:
        self.output.write_bytes(
            self._relative(call_id), json.dumps(record, sort_keys=True).encode()
        )

    def read(self, call_id: str) -> dict[str, Any]:
        with self.output.fs.open(self.output.path(self._relative(call_id)), "rb") as handle:
            return json.loads(handle.read())
