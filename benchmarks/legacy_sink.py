"""The sink of annotator 0.1, kept only as the sink benchmark's baseline: per input file, one
Parquet file per table and one JSON marker, each written before the next (see
annotator/output/legacy.py for the layout and its conversion)."""

from __future__ import annotations

import io
import json
import os
import posixpath
import uuid
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from annotator.config import S3Config
from annotator.schema import ERRORS, SEGMENTS
from annotator.storage import filesystem

OLD_SEGMENTS = pa.schema([f for f in SEGMENTS if f.name != "commit_id"])
OLD_ERRORS = pa.schema([f for f in ERRORS if f.name not in ("call_id", "commit_id")])


class LegacySink:
    def __init__(self, uri: str, s3: S3Config, run_id: str) -> None:
        self.fs, root = filesystem(uri, s3)
        self.root = root.rstrip("/")
        self.local = self.fs.protocol in ("file", ("file", "local"))
        self.run_id = run_id
        self.pending: dict[str, dict] = {}
        self.files = 0

    def _write(self, relative: str, data: bytes) -> None:
        path = posixpath.join(self.root, relative)
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

    def add(self, batch: pa.Table) -> None:
        for row in batch.to_pylist():
            p = self.pending.setdefault(row["call_id"], {"s": [], "e": [], "d": None})
            {"segment": p["s"], "error": p["e"]}.get(row["kind"], []).append(row)
            if row["kind"] == "file_done":
                p["d"] = row
            d = p["d"]
            if d and len(p["s"]) == d["n_segments"] and len(p["e"]) == d["n_errors"]:
                self._commit(row["call_id"], self.pending.pop(row["call_id"]))

    def _parquet(self, rows: list[dict], schema: pa.Schema) -> bytes:
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink, compression="zstd")
        return sink.getvalue()

    def _commit(self, call_id: str, p: dict) -> None:
        now = datetime.now(UTC)
        shard = posixpath.join(call_id[:2], f"{call_id}.parquet")
        if p["s"]:
            rows = [
                {n: r.get(n) for n in OLD_SEGMENTS.names}
                | {
                    "run_id": self.run_id,
                    "segment_id": f"{r['recording_id']}-{r['segment_index']:06d}",
                    "bundle_version": "synthetic",
                    "asr_model": "synthetic-asr",
                    "llm_model": "synthetic-llm",
                    "processed_at": now,
                }
                for r in p["s"]
            ]
            rows.sort(key=lambda r: (r["recording_id"], r["segment_index"]))
            self._write(posixpath.join("segments", shard), self._parquet(rows, OLD_SEGMENTS))
        if p["e"]:
            rows = [
                {n: r.get(n) for n in OLD_ERRORS.names} | {"run_id": self.run_id, "at": now}
                for r in p["e"]
            ]
            self._write(posixpath.join("errors", shard), self._parquet(rows, OLD_ERRORS))
        d = p["d"]
        record = {
            "call_id": call_id,
            "source_uri": d["source_uri"],
            "member": d["member"],
            "recordings": sorted({r["recording_id"] for r in p["s"]}),
            "segments": len(p["s"]),
            "errors": len(p["e"]),
            "duration_s": d["duration_s"],
            "run_id": self.run_id,
            "committed_at": now.isoformat(),
        }
        marker = posixpath.join("_ledger", call_id[:2], f"{call_id}.json")
        self._write(marker, json.dumps(record, sort_keys=True).encode())
        self.files += 1

    def close(self) -> None:
        pass
