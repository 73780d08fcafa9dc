"""Fine-tuning an audio-classifier bundle on Ray Train (annotator/kinds/audio_classifier/model.py):
what ``annotator review retrain`` and ``annotator train audio-classifier`` run.

The checkpoint's head (and its top ``Tuning.top_layers`` encoder layers, as the bundle's record
says or the caller overrides) is trained on the manifest's ``train`` split; the rest of the
encoder stays frozen and runs as served (eval mode: no dropout, SpecAugment or layer drop below
the tuned part), so only the tuned part keeps activations for the backward pass. The loss is the
cross-entropy of the *mapped* posterior (:func:`mapped_log_probs`), the one serving gives: the
head keeps the checkpoint's classes, so the tuned tensors still lay over it and the mapping still
holds, and a dropped class learns to take less mass. One stage on stage 2's schedule
(``train.epochs_stage2``; ``train.lr_stage2`` for the head, ``Tuning.encoder_lr_scale`` of it for
the top layers), the global batch ``train.batch_size`` split over the workers with equal steps on
every rank (``common.shard_indices``, ``common.epoch_loader``), as every kind's trainer does.

Nothing but names and URIs reaches the workers: the start bundle and the checkpoint go through
``common.ship`` (uploaded to ``train.storage`` when it is object storage), the manifest as rows;
the checkpoint the run reports holds the tuned tensors alone, and the export reads them (never the
whole model) into the new bundle, over the same checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from annotator.config import AnnotatorConfig
from training import common

PREFIX = "model."  # of the tuned tensors' names in the training checkpoint (HeadTuning.model)


def mapped_log_probs(logits: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """(batch, our labels) log of the mapped, renormalised posterior of the checkpoint's
    ``logits``: per our label the log-sum-exp of its checkpoint labels' logits, less that of
    every mapped one's (``matrix``: LabelMap.matrix, (checkpoint labels, our labels))."""
    masked = logits.float().unsqueeze(-1).masked_fill(~matrix.bool(), float("-inf"))
    grouped = torch.logsumexp(masked, dim=1)  # (batch, our labels)
    return grouped - torch.logsumexp(grouped, dim=-1, keepdim=True)


class HeadTuning(torch.nn.Module):
    """The checkpoint's model with only the tuned part trainable, giving mapped log posteriors.

    ``train()`` puts the tuned modules alone in training mode: the frozen encoder below runs as
    it is served."""

    def __init__(self, model, matrix: np.ndarray, tuning) -> None:
        from annotator.kinds.audio_classifier.model import trainable_modules, trainable_names

        super().__init__()
        self.model = model
        self.register_buffer("matrix", torch.as_tensor(matrix, dtype=torch.bool), persistent=False)
        self.tuned = [m for m in trainable_modules(model, tuning).values()]
        names = set(trainable_names(model, tuning))
        for name, param in model.named_parameters():
            param.requires_grad_(name in names)

    def train(self, mode: bool = True) -> HeadTuning:
        super().train(False)
        for part in self.tuned:
            if isinstance(part, torch.nn.Module):
                part.train(mode)
        return self

    def forward(self, inputs: Sequence[dict[str, torch.Tensor]]) -> torch.Tensor:
        """``inputs``: the feature extractor's batches (one padded batch, or one per clip where
        the checkpoint cannot batch: model.can_batch)."""
        logits = torch.cat([self.model(**batch).logits for batch in inputs])
        return mapped_log_probs(logits, self.matrix)


@dataclass(eq=False)
class Clip:
    """A training clip as a worker holds it: where its audio is (read when its batch is drawn,
    through the worker's ``common.ClipReader``: memory does not grow with the manifest) and its
    label."""

    example: Any  # training.data.Example
    label: int


def collate(extractor, reader, shortest: int, items: list[Clip]) -> dict[str, Any]:
    from annotator.kinds.audio_classifier.model import can_batch, long_enough, model_inputs

    waves = long_enough([reader.audio(item.example) for item in items], shortest)
    groups = [waves] if can_batch(extractor) else [[w] for w in waves]
    return {
        "inputs": [model_inputs(extractor, g, "cpu", torch.float32) for g in groups],
        "labels": torch.tensor([item.label for item in items]),
    }


def loop(cfg: dict[str, Any]) -> None:
    import functools

    import ray.train
    import ray.train.torch
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    from annotator.kinds.audio_classifier.model import (
        Record,
        checkpoint_labels,
        min_samples,
        overlay,
        tuned_weights,
    )
    from annotator.models.bundle import Bundle, BundleError
    from training.data import examples_of

    config = AnnotatorConfig.model_validate(cfg["config"])
    train = config.train
    torch.set_num_threads(max(1, int(train.cpus_per_worker)))
    torch.manual_seed(train.seed)
    bundle = Bundle.load(common.model_path(cfg["start"], config))
    record = Record.read(bundle.root)
    tuning = replace(record.tuning, **cfg["tuning"])
    checkpoint = common.model_path(cfg["classifier"], config)
    model = AutoModelForAudioClassification.from_pretrained(checkpoint, use_safetensors=True)
    if checkpoint_labels(model.config) != record.label_map.checkpoint_labels:
        raise BundleError(f"{cfg['classifier']} is not the checkpoint bundle {cfg['start']} maps")
    overlay(model, tuned_weights(bundle.root), str(cfg["start"]))
    extractor = AutoFeatureExtractor.from_pretrained(checkpoint)

    labels = bundle.labels
    examples = [e for e in examples_of(cfg["examples"], labels) if e.split == "train"]
    ctx = ray.train.get_context()
    share = [
        examples[i]
        for i in common.shard_indices(
            len(examples), ctx.get_world_rank(), ctx.get_world_size(), train.seed
        )
    ]
    items = [Clip(ex, labels.index(ex.label)) for ex in share]
    reader = common.ClipReader(share, config.s3, config.audio)
    device = ray.train.torch.get_device()
    per_worker = common.local_batch_size(train.batch_size, ctx.get_world_size())
    tuned = HeadTuning(model, record.label_map.matrix(), tuning)
    head = [p for n, p in model.named_parameters() if p.requires_grad and _in_head(n, model)]
    layers = [p for n, p in model.named_parameters() if p.requires_grad and not _in_head(n, model)]
    groups = [{"params": head, "lr": train.lr_stage2}]
    if layers:
        groups.append({"params": layers, "lr": train.lr_stage2 * tuning.encoder_lr_scale})
    wrapped = ray.train.torch.prepare_model(tuned)
    optimizer = torch.optim.AdamW(groups)
    start = common.load_checkpoint(wrapped, optimizer, cfg.get("resume_from"))

    def batch_loss(batch):
        nonlocal right
        log_probs = wrapped(batch["inputs"])
        right += torch.tensor(
            [float((log_probs.argmax(-1) == batch["labels"]).sum()), len(batch["labels"])],
            dtype=torch.float64,
            device=device,
        )
        return torch.nn.functional.nll_loss(log_probs, batch["labels"])

    for epoch in range(start, train.epochs_stage2):
        right = torch.zeros(2, dtype=torch.float64, device=device)
        loader = common.epoch_loader(
            items,
            functools.partial(collate, extractor, reader, min_samples(model.config)),
            per_worker,
            train.seed + epoch,
            group_by=common.source_of,  # a long source read once an epoch
        )
        tally = common.train_epoch(wrapped, optimizer, loader, device, batch_loss)
        metrics = tally.metrics(device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(right)
        metrics["train_accuracy"] = float(right[0] / max(float(right[1]), 1.0))
        common.save_checkpoint(wrapped, optimizer, epoch, metrics)


def _in_head(name: str, model) -> bool:
    base = model.base_model
    prefixes = [n for n, m in model.named_children() if m is base]
    return not any(name.startswith(p + ".") for p in prefixes)


def train_audio_classifier(
    config: AnnotatorConfig,
    manifest,
    start_bundle: str | Path,
    out: Path,
    name: str = "audio-classifier",
    top_layers: int | None = None,
):
    """Fine-tune the bundle at ``start_bundle`` (an imported one, or one tuned already: its
    tensors are where training starts) on ``manifest``'s train split; export a new bundle to
    ``out`` over the same checkpoint. ``top_layers``: encoder layers to tune with the head (by
    default the bundle's ``Tuning.top_layers``; the new bundle records what was used)."""
    from annotator.kinds.audio_classifier.model import (
        KIND,
        Record,
        tuned_weights,
        write_audio_classifier_bundle,
    )
    from annotator.models.bundle import Bundle, BundleError

    config = config.for_kind(KIND)  # its own schedule (train.schedules.audio_classifier)
    out = Path(out)
    if out.exists() and any(out.iterdir()):  # refused now, not after the training run
        raise BundleError(f"{out} is not empty: write the new bundle into a new directory")
    start = Bundle.load(common.model_path(str(start_bundle), config))
    if start.kind != KIND:
        raise ValueError(f"{start_bundle} is a {start.kind} bundle, not an audio-classifier one")
    record = Record.read(start.root)
    tuning = record.tuning if top_layers is None else replace(record.tuning, top_layers=top_layers)
    checkpoint = common.run_trainer(
        loop,
        {
            "config": config.model_dump(mode="json"),
            "examples": common.training_rows(manifest, start.labels, config),
            "start": common.ship(str(start_bundle), config, name),
            "classifier": common.ship(start.base["classifier"], config, name),
            "tuning": {"top_layers": tuning.top_layers},
        },
        name,
        config,
    )
    trained = {k.removeprefix(PREFIX): v for k, v in common.checkpoint_state(checkpoint).items()}
    # What an earlier tuning changed and this one did not train stays as it was.
    weights = {**tuned_weights(start.root), **trained}
    progress = _progress(checkpoint)
    extra = {
        "trained": True,
        "manifest": str(manifest),
        "retrained_from": start.version,
        "epochs": config.train.epochs_stage2,
        "train_accuracy": progress.get("train_accuracy"),
        "tuned": sorted(trained),
    }
    if "imported_from" in start.extra:
        extra["imported_from"] = start.extra["imported_from"]
    return write_audio_classifier_bundle(
        Path(out), start.base["classifier"], record.label_map, tuning, weights, extra
    )


def _progress(checkpoint: str) -> dict[str, Any]:
    import json

    return json.loads((Path(checkpoint) / "progress.json").read_text())


def retrain(config: AnnotatorConfig, manifest, start: str, out: Path, name: str):
    """``annotator review retrain``: :func:`train_audio_classifier` from the served bundle at
    ``start``, tuning what its record says."""
    return train_audio_classifier(config, manifest, start, Path(out), name=name)
