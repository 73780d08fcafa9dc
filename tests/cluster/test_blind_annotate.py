"""The annotate job on a cluster whose nodes share no disk (tests/blind.py): a CPU-less head and
three 2-CPU workers, each in a mount namespace where this session's files are not, S3 (moto on
loopback) the only store they share. Sources, models and the bundle come from S3; every model
stage's pool follows the cluster. A path only the driver sees fails before any work, naming the
nodes that lack it; a worker node lost while it holds work costs nothing but time: the rows
equal the single-node run's over the same files.
"""

from __future__ import annotations

import threading
import time

import pytest

from annotator.pipeline.graph import pools
from annotator.pipeline.pools import cluster_nodes
from annotator.pipeline.run import RunError, annotate
from tests.cluster.conftest import blind_config
from tests.factories import assert_same_rows, rows_of, table_of

pytestmark = pytest.mark.vllm


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


def test_default_pools_follow_the_blind_workers(blind_cluster, s3_server, s3_models):
    """One actor of every model stage per 2-CPU worker, none on the CPU-less head."""
    config = blind_config(s3_server, s3_models, "s3://annotations/unused")
    with blind_cluster.connected():
        sizes = pools(config, cluster_nodes())
    assert {n: p.initial for n, p in sizes.items()} == {"asr": 3, "features": 3, "label": 3}


def test_a_model_path_only_the_driver_sees_fails_before_any_work(
    blind_cluster, blind_corpus, s3_server, s3_models, small_dir
):
    """The planted driver path: the small bundle by its path on this machine. The driver sees
    it; the blind workers do not, and the run says so before decode starts."""
    source, _ = blind_corpus
    out = "s3://annotations/blind-planted"
    config = blind_config(s3_server, s3_models, out, models={"bundle": str(small_dir / "bundle")})
    with blind_cluster.connected(), pytest.raises(RunError) as failure:
        annotate(config, [source])
    message = str(failure.value)
    # The head is blind too: the driver is the only process that sees this machine's disk.
    assert f"models.bundle {small_dir / 'bundle'} is missing on 4 of 4 nodes" in message, message
    for node in blind_cluster.nodes:
        assert node.node_id[:12] in message
    assert "share no disk" in message


def test_a_worker_node_lost_while_it_holds_a_file_costs_only_time(
    baseline, blind_cluster, blind_corpus, s3_server, s3_models
):
    """Every worker's first ASR call holds (ANNOTATOR_PAUSE_AT, keyed in Ray's KV: the nodes
    share no disk); the node whose actor holds is killed as a crash would. Ray Data restarts
    the actors and retries the work on the two left; the rows are the single-node rows. A
    replacement node joins after, as an autoscaler's would."""
    from annotator.output.failpoints import paused_node

    source, local_root = blind_corpus
    out = "s3://annotations/blind-node-loss"
    mark = f"node-loss-{time.time_ns()}"
    env = {"ANNOTATOR_PAUSE_AT": "asr", "ANNOTATOR_PAUSE_MARK": mark}
    for worker in blind_cluster.workers():
        blind_cluster.kill(worker)
    for _ in range(3):
        blind_cluster.add_worker(env=env)
    workers = {n.node_id for n in blind_cluster.workers()}
    config = blind_config(
        s3_server,
        s3_models,
        out,
        # Room for a restarted actor on the two nodes left (tests/pipeline/test_node_loss.py).
        stages={name: {"max_actors": 2} for name in ("asr", "features", "label")},
    )
    lost: list[str] = []

    def take_the_holding_node_away() -> None:
        while (held := paused_node(mark)) is None:
            time.sleep(0.2)
        victim = next(w for w in blind_cluster.workers() if w.node_id == held)
        blind_cluster.kill(victim)
        lost.append(held)

    with blind_cluster.connected() as ray:
        remover = threading.Thread(target=take_the_holding_node_away, daemon=True)
        remover.start()
        summary = annotate(config, [source])
        remover.join(timeout=60)
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        placed = _actor_nodes()
    assert lost, "no ASR call was held, so no node was lost"
    assert lost[0] not in alive
    # Every actor ran on a blind worker (the head has no CPU); ASR on more than one of them: the
    # lost node's (its actor held the windows) and another's (the state API may no longer list
    # the actors of a node that is gone).
    assert set().union(*placed.values()) <= workers, placed
    assert len(placed["asr"] | {lost[0]}) >= 2, placed
    assert_same_rows(
        rows_of(table_of(out, "segments", s3_server)[1], source),
        rows_of(table_of(baseline[0], "segments")[1], local_root),
    )
    assert summary.counts.files == baseline[1].counts.files
    for worker in blind_cluster.workers():  # the paused ones: replaced by plain workers
        blind_cluster.kill(worker)
    for _ in range(3):
        blind_cluster.add_worker()
