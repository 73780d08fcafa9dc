"""The annotate graph as one Ray Data dataset: the same graph on a laptop and on a GPU cluster.

    listing ─► decode ─► ASRStage ─► <the bundle kind's stages> ─► (driver) Sink
    (a task per  (tasks)   (actor pools that follow the cluster: pools.py)
     input URI)

The served bundle's kind (annotator/kinds/) says which stages follow ASR, each an actor class with
its resources in ``stages.<name>``; a kind with a context labeller leaves the label to the sink,
which labels each finished file's segments together (annotator/pipeline/sink.py).

Ray Data does the scheduling: actor pools that grow with the cluster, backpressure between
stages, streaming execution, restarts of dead actors and retries of failed tasks (on another
node when one is lost).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from annotator.config import AnnotatorConfig, StageResources
from annotator.kinds import DEFAULT_KIND, KINDS, Kind
from annotator.pipeline.decode import decode, decode_members
from annotator.pipeline.inputs import source_listing
from annotator.pipeline.pools import GIB, Node, PoolSize, cluster_nodes, pool_size
from annotator.pipeline.stages import ASRStage
from annotator.pipeline.windows import language_probing

log = logging.getLogger("annotator.annotate")


def _memory(gb: float) -> dict[str, Any]:
    return {"memory": int(gb * GIB)} if gb else {}


def _actor_stage(resources: StageResources, pool: PoolSize, calls: int = 1) -> dict[str, Any]:
    """``calls``: batches one actor works on at once (``Stage.calls_at_once``)."""
    import ray.data

    return {
        "compute": ray.data.ActorPoolStrategy(
            min_size=pool.min,
            max_size=pool.max,
            initial_size=pool.initial,
            max_concurrent_calls_per_actor=calls,
            enable_true_multi_threading=calls > 1,
        ),
        "batch_size": resources.batch_size,
        "num_cpus": resources.num_cpus,
        "num_gpus": resources.num_gpus,
        "batch_format": "pyarrow",
        **_memory(resources.memory_gb),
        # Ray Data restarts dead actors and retries their batches (max_restarts=-1 by default).
    }


def pools(
    config: AnnotatorConfig, nodes: list[Node], kind: Kind = KINDS[DEFAULT_KIND]
) -> dict[str, PoolSize]:
    """The model stages' pools on a cluster of ``nodes``: ASR and the bundle kind's stages."""
    stages = config.stages
    return {
        name: pool_size(name, getattr(stages, name), nodes, config.cluster)
        for name in ("asr", *kind.stages)
    }


def _one_file_per_block(ds):
    """Split the stream into blocks of one row each (a file of the listing, an archive's member
    after decode), in tasks that take no CPU.

    Ray Data gathers a task's small outputs into one block: without this split, one decode task
    would take every file of a listing, one after another. ``Dataset.repartition(
    target_num_rows_per_block=1)`` does the split, but its tasks ask for 1 CPU each and Ray 2.60
    gives no way to change that; where the model actors hold more than all but one CPU of every
    node (the small profile on 2-CPU nodes does) those tasks never start and the run hangs. The
    split only slices Arrow tables, so the operator is built here with ``num_cpus=0`` — Ray
    Data's own logical operator, which is why pyproject.toml pins Ray to 2.60.
    """
    from ray.data import Dataset
    from ray.data._internal.logical.interfaces import LogicalPlan
    from ray.data._internal.logical.operators import StreamingRepartition

    split = StreamingRepartition(
        target_num_rows_per_block=1,
        input_dependencies=[ds._logical_plan.dag],
        ray_remote_args={"num_cpus": 0},
    )
    return Dataset._from_parent(ds, LogicalPlan(split, ds.context))


def decoded(
    config: AnnotatorConfig,
    inputs: Sequence[str],
    done_ref: Any = None,
    members_apart: bool = True,
):
    """The graph up to the model stages: the listing, decode tasks, and the archive members they
    hand on decoded by tasks of their own; rows of :mod:`annotator.pipeline.rows`.
    ``members_apart=False``: an archive's task decodes its members itself (one core an archive,
    as before; benchmarks/archive_decode.py compares the two)."""
    import ray.data

    stages = config.stages
    ds = ray.data.read_datasource(
        source_listing(list(inputs), config.audio, config.s3, done_ref),
        override_num_blocks=max(1, len(inputs)),
        # Listing waits on the filesystem, not the CPU; holding a CPU for the length of a long
        # listing would keep decode tasks (or a model actor) from starting beside it.
        num_cpus=0,
    )
    ds = _one_file_per_block(ds)
    probing = language_probing(config)
    decoding = {
        "batch_format": "pyarrow",
        "num_cpus": stages.decode.num_cpus,
        **_memory(stages.decode.memory_gb),
    }
    ds = ds.map_batches(
        decode,
        fn_kwargs={
            "config": config,
            "done_ref": done_ref,
            "probing": probing,
            "members_apart": members_apart,
        },
        batch_size=stages.decode.batch_size,
        **decoding,
    )
    if not members_apart:
        return ds
    # An archive's task hands each member on as a row of its bytes: one a block, so that many
    # tasks decode one archive's members side by side (decode.decode_members).
    ds = _one_file_per_block(ds)
    ds = ds.map_batches(
        decode_members,
        fn_kwargs={"config": config, "probing": probing},
        batch_size=None,
        **decoding,
    )
    return ds


def build(
    config: AnnotatorConfig,
    inputs: Sequence[str],
    done_ref: Any = None,
    kind: Kind = KINDS[DEFAULT_KIND],
):
    """The annotate Dataset over the URIs the user gave, not yet executed.

    ``done_ref``: an object ref of the :class:`~annotator.pipeline.inputs.DoneSet` to skip;
    ``kind``: the served bundle's kind, whose stages follow ASR."""
    from annotator.pipeline.warmup import work_arrived

    sizes = pools(config, cluster_nodes(), kind)
    log.info(
        "actor pools (min/initial/max): %s",
        ", ".join(f"{n} {p.min}/{p.initial}/{p.max}" for n, p in sizes.items()),
    )
    ds = decoded(config, inputs, done_ref)
    flag = work_arrived()  # ASR raises it with its first window; label engines start then
    actors = [("asr", ASRStage, True)]
    actors += [(s.name, s.actor_class(), s.starts_engine) for s in kind.specs]
    for name, stage, starts_engine in actors:
        resources = getattr(config.stages, name)
        kwargs = {"config": config}
        if starts_engine:  # its engine starts when the run's first window arrives
            kwargs["work_arrived"] = flag
        ds = ds.map_batches(
            stage,
            fn_constructor_kwargs=kwargs,
            **_actor_stage(resources, sizes[name], stage.calls_at_once(resources)),
        )
    return ds
