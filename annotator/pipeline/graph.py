"""The annotate graph as one Ray Data dataset: the same graph on a laptop and on a GPU cluster.

    sources ─► decode (tasks) ─► ASRStage ─► FeaturesStage ─► LabelStage ─► (driver) Sink
                                 (actors; batch size, pool size, CPUs and GPUs from config)

Ray Data does the scheduling: actor pools, backpressure between stages, streaming execution,
restarts of dead actors and retries of failed tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from annotator.config import AnnotatorConfig, StageResources
from annotator.pipeline.stages import ASRStage, FeaturesStage, LabelStage, decode

MAX_INPUT_BLOCKS = 10_000


def _actor_stage(resources: StageResources) -> dict[str, Any]:
    import ray.data

    return {
        "compute": ray.data.ActorPoolStrategy(size=resources.concurrency),
        "batch_size": resources.batch_size,
        "num_cpus": resources.num_cpus,
        "num_gpus": resources.num_gpus,
        "batch_format": "pyarrow",
        # Ray Data restarts dead actors and retries their batches (max_restarts=-1 by default).
    }


def build(config: AnnotatorConfig, sources: Sequence[str], done_ref: Any = None):
    """The annotate Dataset over ``sources`` (URIs of files and archives), not yet executed."""
    import ray.data

    stages = config.stages
    items = [{"uri": uri} for uri in sources]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), MAX_INPUT_BLOCKS)))
    ds = ds.map_batches(
        decode,
        fn_kwargs={"config": config, "done_ref": done_ref},
        compute=ray.data.TaskPoolStrategy(size=stages.decode.concurrency),
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=stages.decode.num_cpus,
    )
    ds = ds.map_batches(
        ASRStage, fn_constructor_kwargs={"config": config}, **_actor_stage(stages.asr)
    )
    ds = ds.map_batches(
        FeaturesStage, fn_constructor_kwargs={"config": config}, **_actor_stage(stages.features)
    )
    return ds.map_batches(
        LabelStage, fn_constructor_kwargs={"config": config}, **_actor_stage(stages.label)
    )
