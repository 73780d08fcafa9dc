"""The audio-classifier kind's part of the small profile (annotator/kinds/plugin.py):
``audio-classifier``, a random ``HubertForSequenceClassification`` checkpoint shaped like the
profile's HuBERT with a 4-class head labelled as SUPERB's IEMOCAP emotion task labels it (at paper
size a published checkpoint such as superb/hubert-large-superb-er), and
``audio-classifier-bundle``, the bundle ``annotator models import audio-classifier`` writes over
it. Built in code, nothing downloaded; the same seed gives the same bytes."""

from __future__ import annotations

from pathlib import Path

CHECKPOINT = "audio-classifier"
BUNDLE = "audio-classifier-bundle"
LAYERS = 2
PROJECTION = 64  # classifier_proj_size (transformers' default: 256)
# SUPERB ER's order, which is not our iemocap4 order (neutral, angry, sad, happy): the mapping
# has something to do.
ID2LABEL = {0: "neu", 1: "hap", 2: "ang", 3: "sad"}


def build_checkpoint(dst: Path, seed: int) -> None:
    """The random checkpoint, with a feature extractor config beside it so that
    ``AutoFeatureExtractor`` and ``pipeline("audio-classification")`` load it offline.

    Its head (projector, classifier) is drawn at unit gain (std 1/√fan_in) rather than
    transformers' 0.02: at 0.02 every clip's posterior is uniform to within 10⁻³ and a test of
    "equal to the pipeline's posterior" could not tell one clip from another."""
    import torch
    from transformers import HubertConfig, HubertForSequenceClassification

    from annotator.models.profiles import SmallSizes, encoder_shape, save_feature_extractor

    config = HubertConfig(
        **encoder_shape(SmallSizes(), LAYERS),
        vocab_size=32,
        num_labels=len(ID2LABEL),
        id2label=ID2LABEL,
        label2id={label: i for i, label in ID2LABEL.items()},
        classifier_proj_size=PROJECTION,
    )
    torch.manual_seed(seed + 3)
    model = HubertForSequenceClassification(config).eval()
    with torch.no_grad():
        for layer in (model.projector, model.classifier):
            layer.weight.normal_(0.0, layer.in_features**-0.5)
            layer.bias.zero_()
    model.save_pretrained(dst, safe_serialization=True)
    save_feature_extractor(dst)


def build_small(staging: Path, seed: int, on_step) -> None:
    from transformers import AutoConfig

    from annotator.kinds.audio_classifier.model import (
        checkpoint_labels,
        resolve_mapping,
        write_audio_classifier_bundle,
    )
    from annotator.models.profiles import SMALL_PREFIX

    on_step("random HuBERT audio classifier + its imported bundle")
    build_checkpoint(staging / CHECKPOINT, seed)
    names = checkpoint_labels(AutoConfig.from_pretrained(staging / CHECKPOINT))
    write_audio_classifier_bundle(
        staging / BUNDLE,
        SMALL_PREFIX + CHECKPOINT,
        resolve_mapping(names),
        extra={"trained": False, "imported_from": SMALL_PREFIX + CHECKPOINT},
    )
