"""The runs table: one row per annotate run (``runs/<run_id>.parquet``), and its summary."""

from __future__ import annotations

import hashlib
import io
import uuid
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq

from annotator import __version__
from annotator.config import AnnotatorConfig
from annotator.pipeline.ledger import Output
from annotator.pipeline.sink import Counts, RunInfo


@dataclass
class RunSummary:
    run_id: str
    output: str
    counts: Counts
    started_at: datetime
    finished_at: datetime
    wall_s: float
    bundle_version: str
    # Bundles of earlier runs into this output (from runs/) other than this run's, when files
    # were skipped: those files keep the labels they were committed with.
    earlier_bundles: tuple[str, ...] = ()

    @property
    def audio_hours(self) -> float:
        return self.counts.audio_s / 3600

    @property
    def rtfx(self) -> float:
        return self.counts.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    def lines(self) -> list[str]:
        c = self.counts
        out = [
            f"run {self.run_id} → {self.output}",
            f"  files committed {c.files} · already done {c.skipped}",
            f"  recordings {c.recordings} · segments {c.segments} · errors {c.errors}",
            f"  audio {self.audio_hours:.3f} h · wall {self.wall_s:.1f} s · {self.rtfx:.1f}× real time",
        ]
        placement = c.nodes_per_stage()
        if placement:
            out.append(
                "  actors that did work: "
                + " · ".join(
                    f"{stage} {sum(nodes.values())} on {len(nodes)} node{'s' * (len(nodes) > 1)}"
                    for stage, nodes in placement.items()
                )
            )
        if self.earlier_bundles:
            out.append(
                f"  note: earlier runs into this output used bundle "
                f"{', '.join(self.earlier_bundles)}, this run {self.bundle_version}; the "
                f"{c.skipped} files already done keep the labels they were committed with "
                "(column bundle_version). --force relabels them."
            )
        if c.failed:
            out.append(f"  quarantined in errors/ ({len(c.failed)}):")
            for uri, member, message in c.failed:
                name = f"{uri}!{member}" if member else uri
                out.append(f"    {name}: {message.removeprefix(name + ': ')}")
        return out


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def config_hash(config: AnnotatorConfig) -> str:
    text = config.model_dump_json(exclude={"output", "ray_address"})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def bundles_of_runs(output: Output) -> set[str]:
    """Bundle versions of the runs recorded in ``runs/`` (one small file per run)."""
    versions: set[str] = set()
    for path in output.fs.glob(output.path("runs", "*.parquet")):
        with output.fs.open(path, "rb") as handle:
            versions.update(
                pq.read_table(handle, columns=["bundle_version"])["bundle_version"].to_pylist()
            )
    return versions


def store_run(output: Output, config: AnnotatorConfig, info: RunInfo, s: RunSummary) -> None:
    from annotator.schema import RUNS

    row = {
        "run_id": s.run_id,
        "config_hash": config_hash(config),
        "annotator_version": __version__,
        "bundle_version": s.bundle_version,
        "asr_model": info.asr_model,
        "llm_model": info.llm_model,
        "started_at": s.started_at,
        "finished_at": s.finished_at,
        "recordings": s.counts.recordings,
        "segments": s.counts.segments,
        "errors": s.counts.errors,
        "audio_hours": s.audio_hours,
        "wall_s": s.wall_s,
        "rtfx": s.rtfx,
    }
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([row], schema=RUNS), buffer)
    output.write_bytes(f"runs/{s.run_id}.parquet", buffer.getvalue())
