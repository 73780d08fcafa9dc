"""One annotate run: execute the graph over the inputs, commit through the sink, store the run.

Used by ``annotator annotate`` and ``jobs/annotate.py``; notebooks may call :func:`annotate`.
The inputs are listed inside the graph (``inputs.py``), never as a list on the driver; what the
output's ``files`` table (the ledger) already holds goes to the listing and decode tasks once, as a
zero-copy array.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from annotator.config import AnnotatorConfig
from annotator.output.tables import OutputError, OutputTables
from annotator.pipeline import preflight
from annotator.pipeline.failures import StageBroken, chain
from annotator.pipeline.runs import RunSummary, bundles_of_runs, new_run_id, store_run
from annotator.pipeline.sink import Counts, RunInfo, Sink
from annotator.pipeline.watchdog import Watchdog

log = logging.getLogger("annotator.annotate")


class RunError(RuntimeError):
    """The run itself failed (not an input): nothing committed is lost; rerun to resume."""


def annotate(
    config: AnnotatorConfig,
    inputs: Sequence[str],
    force: bool = False,
    on_progress: Callable[[Counts], None] | None = None,
    retry_errors: bool = False,
) -> RunSummary:
    """Annotate ``inputs`` into ``config.output``; returns the summary (also stored in the runs
    table).

    ``force`` reprocesses files the output already holds (their new rows supersede the old);
    ``retry_errors`` only those committed with errors. Files a transient error kept from being
    done are always done again. Raises :class:`RunError` when the run cannot finish (and stops
    when no work arrives for ``run.stall_timeout_s``); what finished is committed first, the
    runs table records the run as failed or stopped, and a rerun resumes.
    """
    import ray

    from annotator.kinds import kind
    from annotator.models.bundle import Bundle
    from annotator.models.locate import locate
    from annotator.pipeline.connection import connect
    from annotator.pipeline.context import context_pool
    from annotator.pipeline.graph import build
    from annotator.pipeline.inputs import DoneSet
    from annotator.pipeline.pools import PoolError

    if not config.output:
        raise RunError("no output: pass --out (or set output / ANNOTATOR_OUTPUT)")
    if not inputs:
        raise RunError("no inputs: name files, directories, globs, archives or s3:// prefixes")
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    output = OutputTables(config.output, config.s3)
    try:  # everything that can be checked before the work is (pipeline/preflight.py)
        preflight.check_sources(inputs, config.s3)
        preflight.check_output(config.output, config.s3)
        output.refuse_legacy()
        # Where the bundle is, resolved once (a registry pointer to its version's immutable
        # URI); the workers get that location, not this machine's view of it, and fetch it.
        location = locate(config.models.bundle, config.models, config.s3)
        bundle = Bundle.describe(location, config.s3)
    except (*preflight.FAILURES, OutputError) as exc:
        raise RunError(str(exc)) from None
    config = config.model_copy(
        update={"models": config.models.model_copy(update={"bundle": location})}
    )
    served = kind(bundle.kind)
    info = RunInfo(
        run_id=new_run_id(started),
        bundle_version=bundle.version,
        bundle_kind=bundle.kind,
        asr_model=config.models.asr.model,
        llm_model=config.models.llm if "label" in served.stages else "",  # a kind without the LLM
    )
    done = DoneSet() if force else DoneSet(output.committed_ids(retry_errors))
    other_bundles = tuple(sorted(bundles_of_runs(output) - {bundle.version})) if done else ()
    if other_bundles:
        log.warning(
            "earlier runs into %s used bundle %s (this run: %s): files already committed are "
            "skipped and keep the labels they were committed with; --force relabels them",
            output.uri,
            ", ".join(other_bundles),
            bundle.version,
        )
    log.info(
        "run %s: %d inputs, %d files already committed%s",
        info.run_id,
        len(inputs),
        len(done),
        " (ignored: --force)" if force else "",
    )
    connect(config)
    named = {"models.bundle": location, "models.asr.model": config.models.asr.model}
    try:
        preflight.check_models({**named, **served.served_models(config.models, bundle)}, config)
    except preflight.FAILURES as exc:
        raise RunError(str(exc)) from None
    try:
        context = context_pool(config, served.context)
    except PoolError as exc:
        raise RunError(str(exc)) from None
    sink = Sink(output, info, config.commit, context)
    try:
        dataset = build(config, inputs, ray.put(done) if len(done) else None, served)
    except PoolError as exc:
        if context is not None:
            context.close()
        raise RunError(str(exc)) from None

    def summary(status: str = "finished", reason: str | None = None) -> RunSummary:
        return RunSummary(
            run_id=info.run_id,
            output=output.uri,
            counts=sink.counts,
            started_at=started,
            finished_at=datetime.now(UTC),
            wall_s=time.perf_counter() - t0,
            bundle_version=bundle.version,
            earlier_bundles=other_bundles if sink.counts.skipped else (),
            status=status,
            reason=reason,
        )

    def stop(status: str, reason: str) -> None:
        """What finished is committed, so the rerun need not redo it; the run is recorded."""
        try:
            sink.close()
        except Exception:
            log.exception("could not commit the files finished before the failure")
        try:
            store_run(output, config, info, summary(status, reason))
        except Exception:
            log.exception("could not record the run in the runs table")

    watchdog = Watchdog(config.run.stall_timeout_s, "no work reached the sink")
    try:
        with watchdog:
            for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                watchdog.progress()
                sink.add(batch)
                if on_progress is not None:
                    on_progress(sink.counts)
        sink.close()
    except KeyboardInterrupt:
        if not watchdog.fired:
            stop("stopped", "interrupted")
            raise
        stop("stopped", watchdog.reason)
        raise RunError(
            f"the run stopped after committing {sink.counts.files} files: {watchdog.reason}"
        ) from None
    except Exception as exc:
        broken = next((e for e in chain(exc) if isinstance(e, StageBroken)), None)
        reason = str(broken).splitlines()[0] if broken else f"{type(exc).__name__}: {exc}"
        stop("failed", reason)
        raise RunError(
            f"the run failed after committing {sink.counts.files} files: {reason}. "
            "Rerun the same command to resume."
        ) from exc
    if sink.unfinished():
        reason = f"{len(sink.unfinished())} files never completed (first: {sink.unfinished()[0]})"
        store_run(output, config, info, summary("failed", reason))
        raise RunError(f"{reason}; rerun to resume")
    done_run = summary()
    store_run(output, config, info, done_run)
    return done_run
