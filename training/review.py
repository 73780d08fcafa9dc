"""The end of the review loop: fine-tune the served bundle on reviewed labels and compare the old
and the new bundle on the reviewed hold-out, both scored as served.

An EmoQ bundle's stage 2 starts from the served bundle (its EmoQ-Former, projector and LoRA; no
stage 1); an EmoSLLM or Qieemo bundle is fine-tuned by its own trainer (training/emosllm.py,
training/qieemo.py) from the served one. Each trains on the manifest's ``train`` split (``annotator review import`` writes it, whole calls held out as
``test``); the new bundle is exported beside, and one evaluation actor scores both bundles on
``test``. The new bundle is not calibrated: calibrate it on new held-out data before serving it
with abstention.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from annotator.config import AnnotatorConfig, ConfigError

METRICS = ("wa", "ua", "wf1", "ece")


def retrain_from_review(
    config: AnnotatorConfig, manifest: Path, bundle_dir: Path, out: Path, name: str = "review"
) -> dict[str, Any]:
    """Train, export to ``out``, score old and new on the test split; returns both scores."""
    from annotator.models.bundle import Bundle
    from annotator.models.locate import locate
    from annotator.schema import LABEL_SETS
    from training.common import model_path
    from training.data import ManifestError, read_manifest
    from training.evaluate import evaluate_bundles_on_ray
    from training.export import export_bundle
    from training.stage2 import train_stage2

    # The served bundle where it is (a registry name → its version's URI): the workers fetch
    # it from there; this process reads its labels and, for the export, its weights.
    location = locate(str(bundle_dir), config.models, config.s3)
    old = Bundle.load(model_path(location, config))
    label_set = next((k for k, v in LABEL_SETS.items() if list(v) == old.labels), None)
    if label_set is None:
        raise ConfigError(f"bundle {old.root} has labels {old.labels}, no known label set")
    update = {"label_set": label_set, "inputs": old.inputs}
    if old.lora_rank:  # a kind with a LoRA trains the served one's rank (Qieemo, MiSTER-E: none)
        update["lora_rank"] = old.lora_rank
    train = config.train.model_copy(update=update)
    config = config.model_copy(update={"train": train})
    examples = read_manifest(manifest, old.labels, config.s3)
    test = [e for e in examples if e.split == "test"]
    if not test or not any(e.split == "train" for e in examples):
        raise ManifestError(
            f"{manifest} needs reviewed segments in both train and test (held-out calls) to "
            "retrain and compare; review more, or raise --test-share when importing"
        )
    if old.kind == "emosllm":
        from training.emosllm import train_emosllm

        new = train_emosllm(config, manifest, location, Path(out), name=name)
    elif old.kind == "qieemo":
        from training.qieemo import train_qieemo

        new = train_qieemo(config, manifest, location, Path(out), name=name)
    elif old.kind == "mister_e":
        from training.mister_e import train_mister_e

        new = train_mister_e(config, manifest, location, Path(out), name=name)
    else:
        checkpoint = train_stage2(config, manifest, location, name=name, from_bundle=location)
        new = export_bundle(
            config,
            old.root,
            checkpoint,
            Path(out),
            extra={"manifest": str(manifest), "retrained_from": old.version},
        )
    before, after = evaluate_bundles_on_ray(config, [(location, test), (new.root, test)])
    return {
        "examples": len(test),
        "old": {"bundle": old.version, **{m: before[m] for m in METRICS}},
        "new": {"bundle": new.version, **{m: after[m] for m in METRICS}},
    }
