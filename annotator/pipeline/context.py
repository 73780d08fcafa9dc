"""A context kind's labeller (``Kind.context``: MiSTER-E's context model) in a pool of Ray actors.

A context kind labels each finished file's segments together, and only the sink knows when a file
has them all (annotator/pipeline/sink.py). Run on the driver, the context model caps a cluster:
~320 segments/s on one thread against the ~3,800/s a 64-GPU cluster's encoders produce. So the
sink hands each commit's finished files to this pool instead: the files are spread over the
actors (balanced by segment count), each actor labels its share, and the commit waits for all of
them before it writes. Each file is labelled by exactly one actor, from its complete set of
segments, so the labels do not depend on how many actors there are or which took a file.

The pool's size follows the cluster like an actor stage's (``stages.context``: ``per_node``
actors on every node with room, or ``per_gpu`` on every GPU; ``max_actors`` caps it), fixed when
the run starts. Each actor loads the bundle on its own node (``models.bundle``, fetched into the
node's cache when it is in object storage), never from the driver's disk. An actor that dies is
restarted and its call retried (the labels are a pure function of the segments).
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from annotator.config import AnnotatorConfig
from annotator.kinds import StageSpec, load_object
from annotator.pipeline.pools import Node, pool_size

STAGE = "context"  # its stages.<name> section; StageSpec.name of every context kind's labeller
RESTARTS = 3  # per actor, and retries per call: a file that kills its actor fails, not loops


class ContextActor:
    """One labeller in its Ray actor: the bundle loaded on this node."""

    def __init__(self, config: AnnotatorConfig, labeller: str) -> None:
        from annotator.models.bundle import Bundle
        from annotator.pipeline.stages import model_path, set_threads, where_am_i

        set_threads(getattr(config.stages, STAGE).num_cpus)
        bundle = Bundle.load(model_path(config.models.bundle, config))
        below = config.models.unsure_below
        self.labeller = load_object(labeller)(
            bundle,
            config.models.context_window,
            config.models.context_overlap,
            bundle.unsure_below if below is None else below,
        )
        self.where = where_am_i()

    def label(self, segments: pa.Table) -> tuple[pa.Table, str]:
        return self.labeller.label(segments), self.where


def shares(files: Counter, actors: int) -> list[list[str]]:
    """The files (call_id → segments) spread over ``actors``: the largest first, each to the
    actor with the fewest segments so far. Shares that got no file are left out."""
    heap = [(0, a) for a in range(actors)]
    out: list[list[str]] = [[] for _ in range(actors)]
    for call_id, n in sorted(files.items(), key=lambda item: (-item[1], item[0])):
        load, a = heapq.heappop(heap)
        out[a].append(call_id)
        heapq.heappush(heap, (load + n, a))
    return [share for share in out if share]


class ContextPool:
    """The sink's ``context``: ``label(segments)`` and the ``columns`` its labeller reads."""

    def __init__(
        self, config: AnnotatorConfig, spec: StageSpec, nodes: list[Node], size: int | None = None
    ) -> None:
        """``size``: the actors to start; None follows the cluster (``stages.context``)."""
        import ray

        from annotator.pipeline.graph import _memory

        resources = getattr(config.stages, spec.name)
        if size is None:
            size = pool_size(spec.name, resources, nodes, config.cluster).initial
        self.columns = tuple(spec.actor_class().columns)
        actor = ray.remote(ContextActor).options(
            num_cpus=resources.num_cpus,
            num_gpus=resources.num_gpus,
            max_restarts=RESTARTS,
            max_task_retries=RESTARTS,
            scheduling_strategy="SPREAD",  # one a node before two on one
            **_memory(resources.memory_gb),
        )
        self.actors = [actor.remote(config, spec.actor) for _ in range(size)]
        self.placement: Counter[str] = Counter()  # where → segments labelled there

    def label(self, segments: pa.Table) -> pa.Table:
        """Every file's segments labelled, each file by one actor; raises the first actor's
        error (the sink then labels file by file and quarantines the file that still raises)."""
        import ray

        ids = segments.column("call_id")
        files = Counter(ids.to_pylist())
        refs = [
            actor.label.remote(segments.filter(pc.is_in(ids, value_set=pa.array(share))))
            for actor, share in zip(self.actors, shares(files, len(self.actors)), strict=False)
        ]
        parts = []
        for labelled, where in ray.get(refs):
            self.placement[where] += labelled.num_rows
            parts.append(labelled)
        return pa.concat_tables(parts)

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def context_pool(config: AnnotatorConfig, spec: StageSpec | None) -> Any:
    """The served kind's context pool on the connected cluster; None for a kind without one."""
    if spec is None:
        return None
    from annotator.pipeline.pools import cluster_nodes

    return ContextPool(config, spec, cluster_nodes())
