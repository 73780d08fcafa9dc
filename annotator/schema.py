"""Label sets and (later) the pyarrow schemas of the output tables."""

from __future__ import annotations

# Each label is also the word the LLM is asked to say after "Emotion:"; its first token must differ
# from every other label's first token (checked when a bundle is built or loaded).
LABEL_SETS: dict[str, tuple[str, ...]] = {
    # IEMOCAP 4-class (happy and excited merged into happy).
    "iemocap4": ("neutral", "angry", "sad", "happy"),
    # MELD's 7 classes and the common 4-class subset.
    "meld7": ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"),
    "meld4": ("neutral", "anger", "sadness", "joy"),
}
DEFAULT_LABEL_SET = "iemocap4"


def label_set(name: str) -> tuple[str, ...]:
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; known: {', '.join(LABEL_SETS)}") from None
