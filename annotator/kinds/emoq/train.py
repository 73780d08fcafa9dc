"""Retraining an EmoQ bundle from a served one (annotator/kinds/plugin.py, ``train.retrain``):
stage 2 starts from its EmoQ-Former, projector and LoRA (no stage 1), then the export."""

from __future__ import annotations

from pathlib import Path


def retrain(config, manifest, start: str, out: Path, name: str):
    """Fine-tune the bundle at ``start`` (a location its workers fetch) on ``manifest``'s
    ``train`` split; the new bundle is written to ``out``."""
    from annotator.kinds.emoq.export import export_bundle
    from annotator.kinds.emoq.stage2 import train_stage2
    from annotator.models.bundle import Bundle
    from training.common import model_path

    old = Bundle.load(model_path(start, config))
    checkpoint = train_stage2(config, manifest, start, name=name, from_bundle=start)
    return export_bundle(
        config,
        old.root,
        checkpoint,
        Path(out),
        extra={"manifest": str(manifest), "retrained_from": old.version},
    )
