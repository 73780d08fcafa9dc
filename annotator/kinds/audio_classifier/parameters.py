"""Parameters of an audio-classifier bundle, part by part (annotator/models/kind_parameters.py):
at paper size a HuBERT-large with SUPERB's emotion head for IEMOCAP's 4 classes (the shape of
superb/hubert-large-superb-er), counted on the meta device from a config built here; in the small
profile read from the random checkpoint's safetensors header. An imported bundle holds no
weights of its own (a retrained one holds copies of the tuned head and layers)."""

from __future__ import annotations

from pathlib import Path

CLASSES = 4


def _split(names_and_sizes, prefix: str) -> dict[str, int]:
    encoder = sum(n for name, n in names_and_sizes if name.startswith(prefix + "."))
    head = sum(n for name, n in names_and_sizes if not name.startswith(prefix + "."))
    return {"encoder": encoder, "head": head}


def paper() -> dict[str, int]:
    import transformers

    from annotator.models.paper_shapes import hubert_large_config, on_meta

    config = hubert_large_config()
    config.num_labels = CLASSES
    model = on_meta(transformers.HubertForSequenceClassification, config)
    parts = _split([(n, p.numel()) for n, p in model.named_parameters()], model.base_model_prefix)
    return {"hubert-large": parts["encoder"], "head": parts["head"]}


def small(small_dir: Path) -> dict[str, int]:
    import math

    from safetensors import safe_open

    from annotator.kinds.audio_classifier.untrained import BUNDLE, CHECKPOINT
    from annotator.models.kind_parameters import safetensors_parameters

    root = Path(small_dir)
    sizes = []
    for path in sorted((root / CHECKPOINT).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                sizes.append((key, math.prod(handle.get_slice(key).get_shape())))
    parts = _split(sizes, "hubert")
    return {
        "hubert": parts["encoder"],
        "head": parts["head"],
        "bundle": safetensors_parameters(root / BUNDLE),
    }
