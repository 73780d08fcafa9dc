"""The MiSTER-E kind's part of the small profile (annotator/kinds/plugin.py): ``mister-e-bundle``,
an untrained MiSTER-E bundle (utterance heads over the profile's HuBERT and text encoder, a tiny
context model)."""

from __future__ import annotations

from pathlib import Path

# The small bundle's embeddings and context model (the published code's: 3-layer BiGRU of 512
# units, 4 co-attention layers).
DIM, HIDDEN, LAYERS = 48, 32, 2


def build_small(staging: Path, seed: int, on_step) -> None:
    from annotator.kinds.mister_e.utterances import build_untrained_mister_e_bundle
    from annotator.models.profiles import SMALL_PREFIX

    on_step("untrained MiSTER-E bundle")
    build_untrained_mister_e_bundle(
        staging / "mister-e-bundle",
        staging / "hubert",
        staging / "text-encoder",
        {
            "speech_encoder": SMALL_PREFIX + "hubert",
            "text_encoder": SMALL_PREFIX + "text-encoder",
        },
        seed=seed,
        dim=DIM,
        hidden=HIDDEN,
        gru_layers=LAYERS,
        coattention_layers=LAYERS,
        heads=4,
    )
