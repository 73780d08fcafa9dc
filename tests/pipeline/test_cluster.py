"""The annotate job on a real multi-node Ray cluster simulated on this machine: three raylets
(Ray's own ``ray.cluster_utils.Cluster``) with 2 CPUs each, real scheduling across them.

With the default configuration every model stage's pool follows the cluster (one actor per node
on CPU nodes), the actors land on more than one node, and the output equals the single-node run
row for row. A node lost in the middle of a run: test_node_loss.py.
"""

from __future__ import annotations

import pytest

from annotator.config import load_config
from annotator.pipeline.graph import pools
from annotator.pipeline.pools import GIB, cluster_nodes
from annotator.pipeline.run import annotate
from tests.factories import assert_same_rows, rows_of, table_of

pytestmark = pytest.mark.vllm

NODE = {"num_cpus": 2, "memory": int(5 * GIB), "object_store_memory": 200 * 1024**2}


@pytest.fixture(scope="module")
def three_nodes(ray_local):
    """A head and two worker nodes. The session's local Ray is put back afterwards."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": True})
    workers = [cluster.add_node(**NODE) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


def _config(out, small_home, cluster, **extra):
    return load_config(
        None,
        output=str(out),
        models={"home": str(small_home)},
        ray_address=cluster.address,
        **extra,
    )


def _actor_nodes() -> dict[str, set[str]]:
    """stage → nodes its Ray Data actors were placed on (alive or finished), from Ray's state API."""
    from ray.util.state import list_actors

    stages = {"ASRStage": "asr", "FeaturesStage": "features", "LabelStage": "label"}
    placed: dict[str, set[str]] = {}
    for actor in list_actors(detail=True, limit=10_000, raise_on_missing_output=False):
        for cls, stage in stages.items():
            if cls in (actor.repr_name or "") and actor.node_id:
                placed.setdefault(stage, set()).add(actor.node_id)
    return placed


def test_default_pools_use_every_node_and_give_the_single_node_rows(
    baseline, three_nodes, corpus, small_home, tmp_path
):
    import ray

    cluster, _ = three_nodes
    root, _ = corpus
    config = _config(tmp_path / "out", small_home, cluster)
    sizes = pools(config, cluster_nodes())
    assert {name: p.initial for name, p in sizes.items()} == {"asr": 3, "features": 3, "label": 3}
    summary = annotate(config, [str(root)])
    assert_same_rows(
        rows_of(table_of(tmp_path / "out", "segments")[1]),
        rows_of(table_of(baseline[0], "segments")[1]),
    )
    placed = _actor_nodes()
    # Three 1-CPU ASR actors cannot share a 2-CPU node: more than one node runs them.
    assert len(placed["asr"]) >= 2, placed
    assert set().union(*placed.values()) <= {n["NodeID"] for n in ray.nodes()}
    print("actors per stage on nodes:", {k: len(v) for k, v in placed.items()})
    print("actors that did work per node:", summary.counts.nodes_per_stage())
