"""The end of the review loop: fine-tune the served bundle on reviewed labels and compare the old
and the new bundle on the reviewed hold-out, both scored as served.

The served bundle's kind fine-tunes it (its ``train.retrain``, annotator/kinds/plugin.py) on the
manifest's ``train`` split (``annotator review import`` writes it, whole calls held out as
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
    from annotator.kinds import kind
    from annotator.models.bundle import Bundle
    from annotator.models.locate import locate
    from annotator.schema import LABEL_SETS
    from training.common import model_path
    from training.data import ManifestError, read_manifest
    from training.evaluate import evaluate_bundles_on_ray

    # The served bundle where it is (a registry name → its version's URI): the workers fetch
    # it from there; this process reads its labels and, for the export, its weights.
    location = locate(str(bundle_dir), config.models, config.s3)
    old = Bundle.load(model_path(location, config))
    label_set = next((k for k, v in LABEL_SETS.items() if list(v) == old.labels), None)
    if label_set is None:
        raise ConfigError(f"bundle {old.root} has labels {old.labels}, no known label set")
    update = {"label_set": label_set, "inputs": old.inputs}
    if old.lora_rank:  # a kind with a LoRA trains the served one's rank
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
    # The kind fine-tunes from the served bundle on the train split (annotator/kinds/plugin.py).
    new = kind(old.kind).part("train").retrain(config, manifest, location, Path(out), name)
    before, after = evaluate_bundles_on_ray(config, [(location, test), (new.root, test)])
    return {
        "examples": len(test),
        "old": {"bundle": old.version, **{m: before[m] for m in METRICS}},
        "new": {"bundle": new.version, **{m: after[m] for m in METRICS}},
    }
