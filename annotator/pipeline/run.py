"""One annotate run: list the inputs, skip what the ledger has, execute the graph, commit, report.

Used by ``annotator annotate`` and ``jobs/annotate.py``; notebooks may call :func:`annotate`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from annotator import __version__
from annotator.config import AnnotatorConfig
from annotator.pipeline.ledger import Ledger, Output
from annotator.pipeline.sink import Counts, RunInfo, Sink

log = logging.getLogger("annotator.annotate")


class RunError(RuntimeError):
    """The run itself failed (not an input): nothing committed is lost; rerun to resume."""


@dataclass
class RunSummary:
    run_id: str
    output: str
    inputs: int
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
            f"  inputs {self.inputs} · files committed {c.files} · already done {c.skipped}",
            f"  recordings {c.recordings} · segments {c.segments} · errors {c.errors}",
            f"  audio {self.audio_hours:.3f} h · wall {self.wall_s:.1f} s · {self.rtfx:.1f}× real time",
        ]
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


def connect(config: AnnotatorConfig) -> None:
    """Join the cluster ``ray_address`` names, or start a local one; quiet Ray Data's own bars."""
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(address=config.ray_address, log_to_driver=False, include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False


def annotate(
    config: AnnotatorConfig,
    inputs: Sequence[str],
    force: bool = False,
    on_progress: Callable[[Counts, int], None] | None = None,
) -> RunSummary:
    """Annotate ``inputs`` into ``config.output``; returns the summary (also stored in runs/).

    ``force`` reprocesses files the ledger marks done. Raises :class:`RunError` when the run
    cannot finish; committed files stay committed and a rerun resumes.
    """
    import ray

    from annotator.audio.sources import is_archive, iter_sources, recording_id
    from annotator.models.bundle import Bundle
    from annotator.models.profiles import resolve_model

    if not config.output:
        raise RunError("no output: pass --out (or set output / ANNOTATOR_OUTPUT)")
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    output = Output(config.output, config.s3)
    removed = output.clean_temporaries()
    if removed:
        log.info("removed %d temporary files left by an interrupted run", removed)
    bundle = Bundle.load(resolve_model(config.models.bundle, config.models.home))
    info = RunInfo(
        run_id=new_run_id(started),
        bundle_version=bundle.version,
        asr_model=config.models.asr.model,
        llm_model=config.models.llm,
    )
    sources = list(iter_sources(inputs, config.audio, config.s3))
    done = frozenset() if force else Ledger(output).done()
    other_bundles = tuple(sorted(_bundles_of_runs(output) - {bundle.version})) if done else ()
    if other_bundles:
        log.warning(
            "earlier runs into %s used bundle %s (this run: %s): files already committed are "
            "skipped and keep the labels they were committed with; --force relabels them",
            output.uri,
            ", ".join(other_bundles),
            bundle.version,
        )
    # Plain files already committed are skipped here; archives are opened to check their members.
    todo = [u for u in sources if is_archive(u) or recording_id(u, "", None) not in done]
    log.info(
        "run %s: %d inputs, %d files already committed%s",
        info.run_id,
        len(sources),
        len(done),
        " (ignored: --force)" if force else "",
    )
    sink = Sink(output, info)
    sink.counts.skipped = len(sources) - len(todo)
    if todo:
        from annotator.pipeline.graph import build

        connect(config)
        dataset = build(config, todo, ray.put(done) if done else None)
        try:
            for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                sink.add(batch)
                if on_progress is not None:
                    on_progress(sink.counts, len(sources))
        except Exception as exc:
            raise RunError(
                f"the run failed after committing {sink.counts.files} files: "
                f"{type(exc).__name__}: {exc}. Rerun the same command to resume."
            ) from exc
    if sink.unfinished():
        raise RunError(
            f"{len(sink.unfinished())} files never completed (first: {sink.unfinished()[0]}); "
            "rerun to resume"
        )
    finished = datetime.now(UTC)
    summary = RunSummary(
        run_id=info.run_id,
        output=output.uri,
        inputs=len(sources),
        counts=sink.counts,
        started_at=started,
        finished_at=finished,
        wall_s=time.perf_counter() - t0,
        bundle_version=bundle.version,
        earlier_bundles=other_bundles if sink.counts.skipped else (),
    )
    _store(output, config, info, summary)
    return summary


def _bundles_of_runs(output: Output) -> set[str]:
    """Bundle versions of the runs recorded in ``runs/`` (one small file per run)."""
    versions: set[str] = set()
    for path in output.fs.glob(output.path("runs", "*.parquet")):
        with output.fs.open(path, "rb") as handle:
            versions.update(
                pq.read_table(handle, columns=["bundle_version"])["bundle_version"].to_pylist()
            )
    return versions


def _store(output: Output, config: AnnotatorConfig, info: RunInfo, s: RunSummary) -> None:
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


class Progress:
    """A live bar on a terminal; a plain log line every ``interval_s`` otherwise (ray job logs)."""

    def __init__(self, interval_s: float = 30.0, tty: bool | None = None) -> None:
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.interval_s = interval_s
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.bar = None
        if self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]annotate"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} files"),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                transient=False,
            )
            self.task = self.bar.add_task("annotate", total=None, detail="starting")
            self.bar.start()

    def _detail(self, counts: Counts) -> str:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        return (
            f"{counts.recordings} recordings · {counts.audio_s / 3600:.2f} audio h · "
            f"{counts.segments / elapsed:.1f} segments/s · {counts.errors} errors"
        )

    def __call__(self, counts: Counts, inputs: int) -> None:
        done = counts.files + counts.skipped
        if self.bar is not None:
            self.bar.update(self.task, completed=done, detail=self._detail(counts))
            return
        now = time.perf_counter()
        if now - self.last >= self.interval_s:
            self.last = now
            log.info(
                "progress: %d files done (%d skipped) · %s",
                done,
                counts.skipped,
                self._detail(counts),
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
