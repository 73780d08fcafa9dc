"""Stage 1 (§2.2): HuBERT frozen; the EmoQ-Former and an auxiliary MLP head trained with MAL
(SupCon + λ·focal). The head is discarded; the EmoQ-Former goes on to stage 2."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch

from annotator.config import AnnotatorConfig
from annotator.kinds.emoq.train_models import Stage1Model
from annotator.models.transcript import TranscriptTokenizer
from training import common, losses


def build(config: AnnotatorConfig, labels) -> tuple[Stage1Model, TranscriptTokenizer]:
    """(model, the transcript tokenizer serving uses: the same cut, the same ids)."""
    from transformers import AutoConfig

    from annotator.kinds.emoq.emoq_former import EmoQFormer

    text_encoder = common.model_path(config.models.text_encoder, config)
    audio_dim = AutoConfig.from_pretrained(common.model_path(config.models.hubert, config))
    former = EmoQFormer.from_pretrained(
        text_encoder, audio_dim=audio_dim.hidden_size, num_queries=config.train.num_queries
    )
    return Stage1Model(former, len(labels)), TranscriptTokenizer.load(text_encoder)


def collate(transcripts: TranscriptTokenizer, items: list[common.Item]) -> dict[str, torch.Tensor]:
    """A list of examples → the model's inputs and the labels (CPU tensors)."""
    frames, frame_mask = common.pad_frames(items)
    ids, text_mask = transcripts([i.text for i in items])
    return {
        "frames": frames,
        "frame_mask": frame_mask,
        "ids": ids,
        "text_mask": text_mask,
        "labels": torch.tensor([i.label for i in items]),
    }


def standardise_frames(former, items: list[common.Item], batch: int, device) -> None:
    """Set the EmoQ-Former's frame statistics from this group's training split, before the
    first step of a former that starts fresh (stage 1, or stage 2 when stage 1 is skipped), when
    ``train.standardise_frames`` asks for it."""
    items = sorted(items, key=common.source_of)  # streamed frames: each source read once
    parts = (common.pad_frames(items[s : s + batch]) for s in range(0, len(items), batch))
    former.set_frame_statistics(*common.frame_statistics(parts, device))


def loop(cfg: dict[str, Any]) -> None:
    """The per-worker training loop (Ray Train)."""
    import ray.train
    import ray.train.torch

    config, labels, examples, items = common.worker_setup(cfg)
    train = config.train
    device = ray.train.torch.get_device()
    per_worker = common.local_batch_size(train.batch_size, ray.train.get_context().get_world_size())
    weights = losses.class_weights([labels.index(e.label) for e in examples], len(labels))
    weights = weights.to(device)
    model, tokenizer = build(config, labels)
    # SupCon alone leaves the auxiliary head without a gradient; DDP must be told.
    model = ray.train.torch.prepare_model(
        model,
        parallel_strategy_kwargs={"find_unused_parameters": train.stage1_loss == "supcon"},
    )
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=train.lr_stage1
    )
    start = common.load_checkpoint(model, optimizer, cfg.get("resume_from"))
    if start == 0 and train.standardise_frames:
        standardise_frames(getattr(model, "module", model).former, items, per_worker, device)

    def batch_loss(batch):
        e, logits = model(batch["frames"], batch["frame_mask"], batch["ids"], batch["text_mask"])
        return losses.stage1_loss(
            train.stage1_loss,
            e,
            logits,
            batch["labels"],
            train.temperature,
            train.gamma,
            train.mal_lambda,
            weights,
        )

    for epoch in range(start, train.epochs_stage1):
        loader = common.epoch_loader(
            items,
            partial(collate, tokenizer),
            per_worker,
            train.seed + epoch,
            group_by=common.streamed_by_source(items),
        )
        tally = common.train_epoch(model, optimizer, loader, device, batch_loss, [weights])
        common.save_checkpoint(model, optimizer, epoch, tally.metrics(device))


def train_stage1(config: AnnotatorConfig, manifest: Path, out: Path, name: str = "stage1") -> Path:
    """Run stage 1 on Ray Train; write the trained EmoQ-Former to ``out``. With
    ``train.epochs_stage1: 0`` (Table 6's "no stage 1") nothing trains: the EmoQ-Former is
    written as initialised (seeded by ``train.seed``) and stage 2 starts from it."""
    from annotator.schema import label_set

    config = config.for_kind("emoq")  # its own schedule (train.schedules.emoq)
    if config.train.epochs_stage1 == 0:
        torch.manual_seed(config.train.seed)  # the initialisation is torch's
        model, _ = build(config, label_set(config.train.label_set))
        out.mkdir(parents=True, exist_ok=True)
        model.former.save(out)
        return out

    labels = label_set(config.train.label_set)
    checkpoint = common.run_trainer(
        loop,
        {
            "config": config.model_dump(mode="json"),
            "examples": common.training_rows(manifest, labels, config),
        },
        name,
        config,
    )
    model, _ = build(config, label_set(config.train.label_set))
    model.load_state_dict(common.checkpoint_state(checkpoint), strict=False)
    out.mkdir(parents=True, exist_ok=True)
    model.former.save(out)
    return out
