"""A worker node lost in the middle of a run, on a real multi-node Ray cluster simulated on this
machine (``ray.cluster_utils.Cluster``): it costs nothing but time.

The head has no CPUs, so every stage runs on the three worker nodes. Each worker's raylet (and so
every process on it) carries ``ANNOTATOR_PAUSE_AT=asr``: the first ASR actor, on whichever node,
to be handed windows holds them (:mod:`annotator.output.failpoints`) and names its node; the test
then takes that node away as a crash would. The node is lost while it holds work, every time.

Each pool is capped at two actors on the three nodes: a lost actor's retried task waits for that
actor's restart, which needs room somewhere. Without it the run waits forever (seen: with a full
cluster the restarted ASR actor stayed pending) — on a real cluster the autoscaler's replacement
node is that room (cluster/README.md).
"""

from __future__ import annotations

import threading
import time

import pytest

from annotator.config import load_config
from annotator.pipeline.run import annotate
from tests.factories import assert_same_rows, rows_of, table_of
from tests.pipeline.test_cluster import NODE

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def paused_workers(ray_local, tmp_path_factory):
    """(cluster, workers, mark): a CPU-less head and three workers whose first ASR call holds."""
    import ray
    from ray.cluster_utils import Cluster

    mark = tmp_path_factory.mktemp("pause") / "held-by"
    env = {"ANNOTATOR_PAUSE_AT": "asr", "ANNOTATOR_PAUSE_MARK": str(mark)}
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "num_cpus": 0})
    workers = [cluster.add_node(**NODE, env_vars=env) for _ in range(3)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, workers, mark
    ray.shutdown()
    cluster.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


def test_node_lost_while_it_holds_a_file_gives_the_undisturbed_rows(
    baseline, paused_workers, corpus, small_home, tmp_path
):
    """The node whose ASR actor holds windows is removed: Ray Data restarts its actors and retries
    the task elsewhere, the sink commits each file whole, and the rows are the single-node rows."""
    cluster, workers, mark = paused_workers
    root, _ = corpus
    lost: list[str] = []

    def take_the_holding_node_away() -> None:
        while not (mark.exists() and mark.read_text()):
            time.sleep(0.2)
        victim = next(w for w in workers if w.node_id == mark.read_text())
        cluster.remove_node(victim, allow_graceful=False)
        lost.append(victim.node_id)

    remover = threading.Thread(target=take_the_holding_node_away, daemon=True)
    remover.start()
    config = load_config(
        None,
        output=str(tmp_path / "out"),
        models={"home": str(small_home)},
        ray_address=cluster.address,
        stages={name: {"max_actors": 2} for name in ("asr", "features", "label")},
    )
    summary = annotate(config, [str(root)])
    remover.join(timeout=60)
    # The run could not have finished without the held windows: the node was lost mid-run.
    assert lost, "no ASR call was held, so no node was lost"
    assert_same_rows(
        rows_of(table_of(tmp_path / "out", "segments")[1]),
        rows_of(table_of(baseline[0], "segments")[1]),
    )
    assert summary.counts.files == baseline[1].counts.files
    alive = {n["NodeID"] for n in __import__("ray").nodes() if n["Alive"]}
    assert lost[0] not in alive
    print(f"node {lost[0][:8]} removed while its ASR actor held windows")
