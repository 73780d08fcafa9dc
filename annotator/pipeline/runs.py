"""The runs table: one row per annotate run (a Delta table beside segments), and its summary."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from annotator import __version__
from annotator.audio.sources import recording_name
from annotator.config import AnnotatorConfig
from annotator.output.tables import OutputTables
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
    # Bundles of earlier runs into this output (from the runs table) other than this run's, when files
    # were skipped: those files keep the labels they were committed with.
    earlier_bundles: tuple[str, ...] = ()
    status: str = "finished"  # or failed, stopped (schema.RUNS)
    reason: str | None = None

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
            f"  files committed {c.files} in {c.commits} commits · already done {c.skipped}"
            + (f" · left for the next run {c.retry} (transient errors)" if c.retry else ""),
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
            out.append(f"  quarantined in the errors table ({len(c.failed)}):")
            for uri, member, message in c.failed:
                name = recording_name(uri, member)
                out.append(f"    {name}: {message.removeprefix(name + ': ')}")
        return out


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def config_hash(config: AnnotatorConfig) -> str:
    text = config.model_dump_json(exclude={"output", "ray_address"})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def bundles_of_runs(output: OutputTables) -> set[str]:
    """Bundle versions of the runs recorded in the output's runs table."""
    return set(output.read("runs", ["bundle_version"])["bundle_version"].to_pylist())


def store_run(output: OutputTables, config: AnnotatorConfig, info: RunInfo, s: RunSummary) -> None:
    from annotator.schema import RUNS

    row = {
        "run_id": s.run_id,
        "config_hash": config_hash(config),
        "annotator_version": __version__,
        "bundle_kind": info.bundle_kind,
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
        "status": s.status,
        "reason": s.reason,
    }
    output.append("runs", pa.Table.from_pylist([row], schema=RUNS), f"annotator-run-{s.run_id}", 0)
