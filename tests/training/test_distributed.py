"""Data-parallel pieces of training without Ray: SupCon over the global batch on two real gloo
processes, and the device move of nested batches."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training import losses

WORLD = 2


def _embeddings() -> tuple[torch.Tensor, torch.Tensor]:
    """A global batch of 8 whose positives all sit on the *other* rank's half: a loss computed
    per rank alone has no positive pair and would be 0."""
    raw = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    return raw, torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])


def _supcon(raw: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    e = torch.nn.functional.normalize(raw, dim=-1)
    return losses.supervised_contrastive(*losses.gather_batch(e, labels), temperature=0.07)


def _rank(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        raw, labels = _embeddings()
        share = slice(rank * 4, (rank + 1) * 4)
        local = raw[share].clone().requires_grad_(True)
        loss = _supcon(local, labels[share])
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": local.grad}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_supcon_over_the_global_batch_equals_one_process_on_the_whole_batch(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_rank, args=(port, str(tmp_path)), nprocs=WORLD, join=True)

    raw, labels = _embeddings()
    whole = raw.clone().requires_grad_(True)
    expected = _supcon(whole, labels)  # no process group here: the plain single-process loss
    expected.backward()
    assert expected.item() > 0
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
        # Each rank's backward sums the gradients of all ranks' (equal) losses onto its own
        # slice; DDP's average over WORLD ranks turns that into the single-process gradient.
        share = whole.grad[rank * 4 : (rank + 1) * 4]
        assert got["grad"].abs().sum() > 0
        torch.testing.assert_close(got["grad"] / WORLD, share, rtol=1e-4, atol=1e-6)


def test_to_device_moves_every_tensor_of_a_nested_batch():
    from training.common import check_device, to_device

    batch = {
        "frames": torch.zeros(2, 3),
        "text": {"ids": torch.ones(2, 4, dtype=torch.long), "names": ["a", "b"]},
        "pair": (torch.zeros(1), [torch.ones(1), 7]),
    }
    with pytest.raises(RuntimeError, match="not on the worker's meta"):
        check_device(batch, torch.device("meta"))
    moved = to_device(batch, torch.device("meta"))  # a device without a GPU: CPU → meta
    check_device(moved, torch.device("meta"))
    assert moved["text"]["ids"].device.type == "meta" and moved["text"]["ids"].dtype == torch.long
    assert moved["pair"][1][0].is_meta and moved["pair"][1][1] == 7
    assert moved["text"]["names"] == ["a", "b"] and isinstance(moved["pair"], tuple)


@pytest.mark.parametrize("n", [13, 29, 96])
def test_every_worker_gets_a_share_of_the_same_length_covering_all_examples(n):
    from training.common import shard_indices

    shares = [shard_indices(n, rank, 3, seed=0) for rank in range(3)]
    assert len({len(s) for s in shares}) == 1
    assert set().union(*shares) == set(range(n))
    assert sum(len(s) for s in shares) - n < 3  # at most world_size - 1 repeated to pad


def test_global_batch_that_does_not_divide_over_the_workers_is_refused():
    from annotator.config import ConfigError, load_config
    from training.common import local_batch_size

    with pytest.raises(ConfigError, match=r"train: .*batch_size 8 .* num_workers 3"):
        load_config(None, train={"num_workers": 3})
    assert load_config(None, train={"num_workers": 4}).train.batch_size == 8
    assert local_batch_size(8, 4) == 2
    with pytest.raises(ConfigError, match=r"train\.batch_size 8"):
        local_batch_size(8, 3)
