"""Training a Qieemo bundle on Ray Train (annotator/kinds/qieemo/model.py).

The CTC encoder stays frozen (the paper's first stage, ASR training, is the encoder's own): each
worker runs it once over its share of the ``train`` split, keeps the fused blocks and the CTC
logits of the real frames, and trains the block weights, Conv2D, fusion, cross-modal attention,
pooling and classifier with cross-entropy ([guess]: the paper's loss is not recovered), after
standardising the blocks' features by the training split's statistics (``feature_statistics``;
a bundle that was trained already keeps its own). One
stage, on stage 2's schedule (``train.epochs_stage2``, ``train.lr_stage2``), the global batch
``train.batch_size`` split over the workers with equal steps on every rank as for EmoQ
(``common.shard_indices``, ``common.epoch_loader``). Each epoch reports the loss and the training
accuracy; the result is exported as a new bundle from the checkpoint's tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from annotator.config import AnnotatorConfig
from training import common


@dataclass
class Encoded:
    blocks: torch.Tensor  # (len(config.blocks), frames, dim): the fused blocks, real frames
    logits: torch.Tensor  # (frames, vocab): CTC logits
    label: int


def encode(examples, labels, config: AnnotatorConfig, bundle, batch: int = 8) -> list[Encoded]:
    """Run the bundle's frozen CTC encoder once over ``examples``."""
    from annotator.kinds.qieemo.model import CTCEncoder, QieemoConfig
    from training.data import load_audios

    qconfig = QieemoConfig(**_config_of(bundle))
    encoder = CTCEncoder(common.model_path(bundle.base["ctc_encoder"], config))
    audios = load_audios(examples, config.s3)
    out = []
    for start in range(0, len(audios), batch):
        hidden, logits, mask = encoder(audios[start : start + batch])
        for k in range(logits.shape[0]):
            n = int(mask[k].sum())
            out.append(
                Encoded(
                    torch.stack([hidden[b][k, :n] for b in qconfig.blocks]).clone(),
                    logits[k, :n].clone(),
                    labels.index(examples[start + k].label),
                )
            )
    return out


def _config_of(bundle) -> dict[str, Any]:
    import json

    from annotator.kinds.qieemo.model import CONFIG

    return json.loads((Path(bundle.root) / CONFIG).read_text())


def collate(items: list[Encoded]) -> dict[str, torch.Tensor]:
    longest = max(i.logits.shape[0] for i in items)
    nb, _, dim = items[0].blocks.shape
    vocab = items[0].logits.shape[1]
    blocks = torch.zeros(len(items), nb, longest, dim)
    logits = torch.zeros(len(items), longest, vocab)
    mask = torch.zeros(len(items), longest, dtype=torch.bool)
    for k, item in enumerate(items):
        n = item.logits.shape[0]
        blocks[k, :, :n], logits[k, :n], mask[k, :n] = item.blocks, item.logits, True
    labels = torch.tensor([i.label for i in items])
    return {"blocks": blocks, "logits": logits, "mask": mask, "labels": labels}


def loop(cfg: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from annotator.kinds.qieemo.model import Qieemo
    from annotator.models.bundle import Bundle
    from training.data import examples_of

    config = AnnotatorConfig.model_validate(cfg["config"])
    train = config.train
    torch.set_num_threads(max(1, int(train.cpus_per_worker)))
    torch.manual_seed(train.seed)
    bundle = Bundle.load(common.model_path(cfg["start"], config))
    labels = bundle.labels
    examples = [e for e in examples_of(cfg["examples"], labels) if e.split == "train"]
    ctx = ray.train.get_context()
    share = common.shard_indices(
        len(examples), ctx.get_world_rank(), ctx.get_world_size(), train.seed
    )
    items = encode([examples[i] for i in share], labels, config, bundle)
    device = ray.train.torch.get_device()
    per_worker = common.local_batch_size(train.batch_size, ctx.get_world_size())
    model = ray.train.torch.prepare_model(Qieemo.load(bundle.root).train())
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr_stage2)
    start = common.load_checkpoint(model, optimizer, cfg.get("resume_from"))
    if start == 0 and not bundle.extra.get("trained"):
        # Every rank sets the same statistics (summed over all shares): the replicas stay equal.
        total, squares, frames = feature_statistics(items, device)
        getattr(model, "module", model).set_feature_statistics(total, squares, frames)

    def batch_loss(batch):
        nonlocal right
        logits = model(batch["blocks"], batch["logits"], batch["mask"])
        right += torch.tensor(
            [float((logits.argmax(-1) == batch["labels"]).sum()), len(batch["labels"])],
            dtype=torch.float64,
            device=device,
        )
        return torch.nn.functional.cross_entropy(logits, batch["labels"])

    for epoch in range(start, train.epochs_stage2):
        right = torch.zeros(2, dtype=torch.float64, device=device)
        loader = common.epoch_loader(items, collate, per_worker, train.seed + epoch)
        tally = common.train_epoch(model, optimizer, loader, device, batch_loss)
        metrics = tally.metrics(device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(right)
        metrics["train_accuracy"] = float(right[0] / max(float(right[1]), 1.0))
        common.save_checkpoint(model, optimizer, epoch, metrics)


def feature_statistics(items: list[Encoded], device) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per block and feature, the sum and the sum of squares of the fused blocks over every real
    frame of the training split, and the frame count: this worker's share summed over the group."""
    import torch.distributed as dist

    total = sum(item.blocks.double().sum(dim=1) for item in items).to(device)
    squares = sum((item.blocks.double() ** 2).sum(dim=1) for item in items).to(device)
    frames = torch.tensor([float(sum(item.blocks.shape[1] for item in items))], device=device)
    if dist.is_available() and dist.is_initialized():
        for tensor in (total, squares, frames):
            dist.all_reduce(tensor)
    return total.float(), squares.float(), float(frames)


def train_qieemo(
    config: AnnotatorConfig,
    manifest: Path,
    start_bundle: Path,
    out: Path,
    name: str = "qieemo",
):
    """Train from ``start_bundle`` (an untrained one from ``annotator models init``, or a trained
    one to fine-tune) on ``manifest``'s train split; export the result to ``out``."""
    import json

    from annotator.kinds.qieemo.model import Qieemo, write_qieemo_bundle
    from annotator.models.bundle import Bundle

    start = Bundle.load(common.model_path(str(start_bundle), config))
    if start.kind != "qieemo":
        raise ValueError(f"{start_bundle} is a {start.kind} bundle, not a Qieemo one")
    checkpoint = common.run_trainer(
        loop,
        {
            "config": config.model_dump(mode="json"),
            "examples": common.training_rows(manifest, start.labels, config),
            "start": common.ship(str(start_bundle), config, name),
        },
        name,
        config,
    )
    model = Qieemo.load(start.root)
    model.load_state_dict(common.checkpoint_state(checkpoint), strict=True)
    progress = json.loads((Path(checkpoint) / "progress.json").read_text())
    extra = {
        "trained": True,
        "manifest": str(manifest),
        "epochs": config.train.epochs_stage2,
        "train_accuracy": progress.get("train_accuracy"),
        "started_from": start.version,
    }
    return write_qieemo_bundle(Path(out), model, start.labels, start.base, extra)


def retrain(config: AnnotatorConfig, manifest, start: str, out: Path, name: str):
    """``annotator review retrain``: :func:`train_qieemo` from the served bundle at ``start``."""
    return train_qieemo(config, manifest, start, Path(out), name=name)
