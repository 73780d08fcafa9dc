"""Qieemo's parts and their parameters (annotator/models/kind_parameters.py): a HuBERT-large CTC
encoder (facebook/hubert-large-ls960-ft) and the fusion/attention/classifier over its upper 12
blocks."""

from __future__ import annotations

from pathlib import Path


def paper() -> dict[str, int]:
    import transformers

    from annotator.kinds.qieemo.model import Qieemo, QieemoConfig, upper_blocks
    from annotator.models.kind_parameters import count
    from annotator.models.paper_shapes import hubert_large_config, on_meta

    hubert = hubert_large_config()
    qieemo = on_meta(
        Qieemo,
        QieemoConfig(
            encoder_dim=hubert.hidden_size,
            vocab=hubert.vocab_size,
            blocks=upper_blocks(hubert.num_hidden_layers),
            num_labels=4,
        ),
    )
    return {
        "hubert-large-ctc": count(on_meta(transformers.HubertForCTC, hubert)),
        "qieemo": count(qieemo),
    }


def small(small_dir: Path) -> dict[str, int]:
    from annotator.models.kind_parameters import safetensors_parameters as count

    return {"ctc": count(small_dir / "ctc"), "qieemo": count(small_dir / "qieemo-bundle")}
