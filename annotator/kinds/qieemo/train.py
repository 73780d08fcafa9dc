"""Training a Qieemo bundle on Ray Train (annotator/kinds/qieemo/model.py).

The CTC encoder stays frozen (the paper's first stage, ASR training, is the encoder's own): each
worker runs it over each batch of its share of the ``train`` split as the batch is drawn (the
fused blocks and the CTC logits of the real frames; nothing of the split is held in memory, at
the cost of one encoder pass per epoch and one for the statistics), and trains the block weights, Conv2D, fusion, cross-modal attention,
pooling and classifier with cross-entropy ([guess]: the paper's loss is not recovered), after
standardising the blocks' features by the training split's statistics (``feature_statistics``;
a bundle that was trained already keeps its own). One
stage, on stage 2's schedule (``train.epochs_stage2``, ``train.lr_stage2``), the global batch
``train.batch_size`` split over the workers with equal steps on every rank as every kind's trainer
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
class Clip:
    """One training example as a worker holds it: where its audio is, and its label; the audio
    is read and encoded when its batch is drawn, so a worker's memory does not grow with its
    share of the manifest."""

    example: Any  # training.data.Example
    label: int


class BatchEncoder:
    """A batch of clips → the model's inputs: their audio read and run through the bundle's
    frozen CTC encoder (in inference mode), the fused blocks and the CTC logits of the real frames
    kept, padded frames zero. Computed again each epoch: the encoder is frozen, so the features
    are the same, and nothing of the split stays in RAM.

    Audio through the worker's ``common.ClipReader``: the epoch's batches run source by source
    (``epoch_loader(group_by=...)``), so a long recording is decoded once per epoch, and memory
    holds one source's clips, not the split's.

    ``train.features: memory``: every clip encoded once, in the share's order eight at a time,
    its real frames held and padded into each batch (faster epochs; memory grows with the
    share: ~31 GB per worker for IEMOCAP at paper size)."""

    def __init__(self, config: AnnotatorConfig, bundle, clips: list[Clip], device="cpu") -> None:
        from annotator.kinds.qieemo.model import CTCEncoder, QieemoConfig

        self.blocks = list(QieemoConfig(**_config_of(bundle)).blocks)
        # In the dtype the features stage runs it in (float16 on a GPU by default), as served.
        _, dtype = common.encoder_device(config)
        path = common.model_path(bundle.base["ctc_encoder"], config)
        self.encoder = CTCEncoder(path, str(device), dtype)
        self.reader = common.ClipReader([clip.example for clip in clips], config.s3, config.audio)
        self.held: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None
        if config.train.features == "memory":
            self.held = {}
            for start in range(0, len(clips), 8):
                chunk = clips[start : start + 8]
                part = self._encoded(chunk)
                for k, clip in enumerate(chunk):
                    n = int(part["mask"][k].sum())
                    self.held[id(clip)] = (part["blocks"][k, :, :n], part["logits"][k, :n])

    def streams(self) -> bool:
        return self.held is None

    def __call__(self, clips: list[Clip]) -> dict[str, torch.Tensor]:
        if self.held is None:
            # Each clip encoded alone, as held features are: every epoch sees the same features
            # whatever clips share its batch. (The small profile's CTC encoder measured
            # padding-invariant to 4e-7, alone against a batch of 4; a wav2vec2-family encoder
            # with a group-norm feature extractor is not, so this does not rely on it.)
            parts = []
            for clip in clips:
                one = self._encoded([clip])
                n = int(one["mask"][0].sum())
                parts.append((one["blocks"][0, :, :n], one["logits"][0, :n]))
        else:
            parts = [self.held[id(c)] for c in clips]
        longest = max(logits.shape[0] for _, logits in parts)
        nb, _, dim = parts[0][0].shape
        blocks = torch.zeros(len(parts), nb, longest, dim)
        logits = torch.zeros(len(parts), longest, parts[0][1].shape[1])
        mask = torch.zeros(len(parts), longest, dtype=torch.bool)
        for k, (b, lg) in enumerate(parts):
            n = lg.shape[0]
            blocks[k, :, :n], logits[k, :n], mask[k, :n] = b, lg, True
        labels = torch.tensor([c.label for c in clips])
        return {"blocks": blocks, "logits": logits, "mask": mask, "labels": labels}

    def _encoded(self, clips: list[Clip]) -> dict[str, torch.Tensor]:
        hidden, logits, mask = self.encoder([self.reader.audio(c.example) for c in clips])
        real = mask[..., None].to(logits.dtype)
        # Clones leave inference mode: the tensors feed a training forward.
        blocks = torch.stack([hidden[b] for b in self.blocks], dim=1) * real[:, None]
        return {
            "blocks": blocks.float().cpu().clone(),
            "logits": (logits * real).float().cpu().clone(),
            "mask": mask.cpu().clone(),
            "labels": torch.tensor([c.label for c in clips]),
        }


def _config_of(bundle) -> dict[str, Any]:
    import json

    from annotator.kinds.qieemo.model import CONFIG

    return json.loads((Path(bundle.root) / CONFIG).read_text())


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
    clips = [Clip(examples[i], labels.index(examples[i].label)) for i in share]
    device = ray.train.torch.get_device()
    collate = BatchEncoder(config, bundle, clips, device)
    per_worker = common.local_batch_size(train.batch_size, ctx.get_world_size())
    model = ray.train.torch.prepare_model(Qieemo.load(bundle.root).train())
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr_stage2)
    start = common.load_checkpoint(model, optimizer, cfg.get("resume_from"))
    if start == 0 and not bundle.extra.get("trained"):
        # Every rank sets the same statistics (summed over all shares): the replicas stay equal.
        mean, inv_std = feature_statistics(clips, collate, per_worker, device)
        getattr(model, "module", model).set_feature_statistics(mean, inv_std)

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
        loader = common.epoch_loader(
            clips,
            collate,
            per_worker,
            train.seed + epoch,
            group_by=common.source_of if collate.streams() else None,
        )
        tally = common.train_epoch(model, optimizer, loader, device, batch_loss)
        metrics = tally.metrics(device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(right)
        metrics["train_accuracy"] = float(right[0] / max(float(right[1]), 1.0))
        # What a user sizing workers wants to see: this rank's peak memory and source decodes.
        metrics["worker_peak_rss_mib"] = common.peak_rss_mib()
        metrics["source_decodes"] = collate.reader.decodes
        common.save_checkpoint(model, optimizer, epoch, metrics)


def feature_statistics(
    clips: list[Clip], encode: BatchEncoder, batch: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per block and feature, the mean and 1/std of the fused blocks over every real frame of
    the training split (``common.frame_statistics``): this worker's share, one batch at a time,
    a source's clips together so each is read once."""
    clips = sorted(clips, key=common.source_of)
    parts = (encode(clips[s : s + batch]) for s in range(0, len(clips), batch))
    return common.frame_statistics(((p["blocks"], p["mask"]) for p in parts), device)


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

    config = config.for_kind("qieemo")  # its own schedule (train.schedules.qieemo)
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
