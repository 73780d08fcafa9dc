"""Actor pools that follow the cluster.

A model stage's config says what one actor needs (CPUs, GPU share, memory) and how the stages
pack a GPU (``per_gpu``) or a node (``per_node``); how many actors run is derived here from the
resources the cluster has when the run starts, and from the size it may grow to
(``cluster.max_gpus`` / ``cluster.max_nodes``). Ray Data's autoscaling actor pool then starts with
every GPU or node of the cluster busy and grows, asking the Ray autoscaler for nodes, up to the
maximum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from annotator.config import ClusterConfig, StageResources

GIB = 1024**3


class PoolError(RuntimeError):
    """A stage that cannot run one actor on this cluster."""


@dataclass(frozen=True)
class Node:
    """What one alive Ray node offers (Ray's resource totals)."""

    cpus: float
    gpus: float
    memory_bytes: float

    @classmethod
    def from_ray(cls, resources: dict[str, float]) -> Node:
        return cls(
            resources.get("CPU", 0.0), resources.get("GPU", 0.0), resources.get("memory", 0.0)
        )


@dataclass(frozen=True)
class PoolSize:
    """Ray Data's ``ActorPoolStrategy(min_size, max_size, initial_size)``."""

    min: int
    initial: int
    max: int


def cluster_nodes() -> list[Node]:
    """The alive nodes of the connected Ray cluster."""
    import ray

    return [Node.from_ray(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def _room(node: Node, stage: StageResources) -> int:
    """How many of the stage's actors this node could hold on its own."""
    fits = [node.cpus / stage.num_cpus if stage.num_cpus else math.inf]
    if stage.memory_gb:
        fits.append(node.memory_bytes / (stage.memory_gb * GIB))
    return int(min(fits) + 1e-9) if node.cpus > 0 else 0


def present_actors(stage: StageResources, nodes: list[Node]) -> int:
    """Actors that fill the cluster as it is: ``per_gpu`` on each GPU, or ``per_node`` on each
    node with room for one."""
    if stage.num_gpus > 0:
        return sum(int(n.gpus + 1e-9) * stage.per_gpu for n in nodes if _room(n, stage) > 0)
    return sum(min(stage.per_node, _room(n, stage)) for n in nodes)


def pool_size(
    name: str, stage: StageResources, nodes: list[Node], cluster: ClusterConfig
) -> PoolSize:
    """The stage's pool on this cluster; raises :class:`PoolError` if not one actor can run."""
    present = present_actors(stage, nodes)
    if stage.num_gpus > 0:
        most = present if cluster.max_gpus is None else cluster.max_gpus * stage.per_gpu
    else:
        most = present if cluster.max_nodes is None else cluster.max_nodes * stage.per_node
    most = max(most, present)
    if most == 0:
        need = f"{stage.num_gpus:g} GPU, " if stage.num_gpus else ""
        have = ", ".join(
            f"{n.cpus:g} CPU/{n.gpus:g} GPU/{n.memory_bytes / GIB:.1f} GiB" for n in nodes
        )
        raise PoolError(
            f"stage {name} needs {need}{stage.num_cpus:g} CPU and {stage.memory_gb:g} GiB per "
            f"actor, and no node has that (nodes: {have or 'none'}); change stages.{name} "
            "(num_gpus 0 runs it on CPUs) or set cluster.max_gpus / max_nodes for an "
            "autoscaling cluster"
        )
    if stage.max_actors is not None:
        most = min(most, stage.max_actors)
    least = stage.min_actors
    most = max(most, least)
    return PoolSize(min=least, initial=min(max(present, least), most), max=most)
