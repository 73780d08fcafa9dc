"""The Qieemo kind's part of the small profile (annotator/kinds/plugin.py): ``ctc``, a random
HuBERT with a CTC head (at paper size a real CTC checkpoint such as
facebook/hubert-large-ls960-ft), and ``qieemo-bundle``, an untrained Qieemo bundle over it."""

from __future__ import annotations

from pathlib import Path

CTC_LAYERS = 4  # the small CTC encoder's blocks: blocks 3 and 4 fused
CTC_VOCAB = 32  # characters


def build_ctc_encoder(dst: Path, seed: int) -> None:
    import torch
    from transformers import HubertConfig, HubertForCTC

    from annotator.models.profiles import SmallSizes, encoder_shape, save_feature_extractor

    config = HubertConfig(**encoder_shape(SmallSizes(), CTC_LAYERS), vocab_size=CTC_VOCAB)
    torch.manual_seed(seed + 1)
    HubertForCTC(config).eval().save_pretrained(dst, safe_serialization=True)
    save_feature_extractor(dst)


def build_small(staging: Path, seed: int, on_step) -> None:
    from annotator.kinds.qieemo.model import build_untrained_qieemo_bundle
    from annotator.models.profiles import SMALL_PREFIX

    on_step("random HuBERT CTC + untrained Qieemo bundle")
    build_ctc_encoder(staging / "ctc", seed)
    build_untrained_qieemo_bundle(
        staging / "qieemo-bundle", staging / "ctc", SMALL_PREFIX + "ctc", seed=seed, hidden=64
    )
