"""Synthetic espeak-ng corpora, written as manifests (training/data.py): single utterances whose
wording and/or prosody carry the emotion (``synthetic_corpus``), and two-speaker calls whose
emotion depends on context (``synthetic_conversations``). Honest test data for the pipeline, the
demo and the benchmarks, not a claim about how people sound."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.data import Example, write_manifest

# Wording and prosody both carry the emotion. Honest test data for the pipeline and the demo,
# not a claim about how people sound.
SYNTH_WORDS = {
    "neutral": [
        "the meeting is at ten in the small room",
        "the report has four pages and a table",
        "the bus leaves from the north station",
        "the form asks for your name and address",
        "the shop opens at nine on weekdays",
        "the parcel was sent on tuesday",
    ],
    "angry": [
        "this is outrageous and I am furious",
        "I am sick of this, fix it now",
        "how dare you ignore me again",
        "stop wasting my time, this is unacceptable",
        "I am so angry I could scream",
        "you broke it again and I hate it",
    ],
    "sad": [
        "I miss her so much, everything feels empty",
        "I lost my job and I feel hopeless",
        "nobody came and I was alone all night",
        "I am so sorry, it is all my fault",
        "my dog died and I cannot stop crying",
        "it hurts, I feel so lonely and tired",
    ],
    "happy": [
        "this is wonderful, I love it",
        "we won, I am so happy and excited",
        "what a great surprise, thank you so much",
        "I got the job, this is fantastic",
        "hooray, the best day of my life",
        "I am delighted, everything went perfectly",
    ],
}
SYNTH_PROSODY = {  # espeak-ng rate (wpm), pitch (0-99), amplitude (0-200)
    "neutral": {"rate": 150, "pitch": 45, "amplitude": 100},
    "angry": {"rate": 200, "pitch": 70, "amplitude": 180},
    "sad": {"rate": 105, "pitch": 20, "amplitude": 60},
    "happy": {"rate": 175, "pitch": 85, "amplitude": 130},
}
SYNTH_VOICES = ["en-us", "en-gb", "en-us+f3", "en-us+m3", "en-gb+f4", "en-us+m7"]
# What carries the emotion in a synthetic corpus: both (the default), prosody only (every emotion
# speaks the same neutral sentences) or wording only (every emotion spoken with neutral prosody).
CARRIERS = ("both", "prosody", "wording")


def _voice_prosody(label: str, v: int) -> dict[str, int]:
    """The emotion's prosody, shifted per voice (pitch ±8, rate ±8 %), so that no single pitch
    or rate value names an emotion across voices."""
    base = SYNTH_PROSODY[label]
    shift = (v % 3) - 1
    return {
        "rate": round(base["rate"] * (1 + 0.08 * shift)),
        "pitch": min(99, max(0, base["pitch"] + 8 * shift)),
        "amplitude": base["amplitude"],
    }


def synthetic_corpus(
    root: Path,
    voices: Sequence[str] = tuple(SYNTH_VOICES),
    test_voices: int = 2,
    per_class: int = 6,
    carries: str = "both",
) -> Path:
    """Speak every emotion's sentences in every voice; the last ``test_voices`` voices are the
    test split (speaker-independent). Writes ``root/<voice>/<label>_<i>.wav`` and
    ``root/manifest.jsonl`` (returned). Reuses an existing complete corpus.

    ``carries``: ``both`` (wording and prosody carry the emotion), ``prosody`` (the same neutral
    sentences for every emotion; pitch, rate and loudness carry it, shifted per voice) or
    ``wording`` (every sentence spoken with the same neutral prosody)."""
    from annotator.audio.synth import encode, speak

    if carries not in CARRIERS:
        raise ValueError(f"carries must be one of {CARRIERS}, not {carries!r}")
    manifest = Path(root) / "manifest.jsonl"
    if manifest.is_file():
        return manifest
    examples = []
    for v, voice in enumerate(voices):
        split = "test" if v >= len(voices) - test_voices else "train"
        for label, sentences in SYNTH_WORDS.items():
            if carries == "prosody":
                sentences = SYNTH_WORDS["neutral"]
            prosody = (
                SYNTH_PROSODY["neutral"]
                if carries == "wording"
                else _voice_prosody(label, v)
                if carries == "prosody"
                else SYNTH_PROSODY[label]
            )
            for i, text in enumerate(sentences[:per_class]):
                path = Path(root) / voice.replace("+", "_") / f"{label}_{i}.wav"
                encode(speak(text, voice=voice, **prosody), path)
                examples.append(Example(str(path), text, label, voice, split))
    tmp = manifest.with_suffix(".tmp")
    write_manifest(examples, tmp)
    tmp.rename(manifest)  # present only when complete
    return manifest


def synthetic_conversations(
    root: Path,
    voices: Sequence[str] = tuple(SYNTH_VOICES),
    test_voices: int = 2,
    per_pair: int = 2,
    turns: int = 6,
    tail: int = 2,
    seed: int = 0,
) -> Path:
    """Two-speaker calls, one voice per channel, whose emotion depends on context: in a call of
    emotion E the speakers take turns saying E's sentences with E's prosody, then the last
    ``tail`` turns are neutral sentences spoken neutrally, still labelled E (the feeling carries
    over; a neutral call is neutral throughout). A model that hears each turn alone cannot
    tell a neutral call's turns from the tail of an angry one; a model that reads the call can.

    Calls pair voices within a split (the last ``test_voices`` voices are the test split: held
    out speakers) in both channel orders, ``per_pair`` calls per pair and emotion. Writes
    ``root/call_<i>.wav`` (stereo, 16 kHz) and ``root/manifest.jsonl`` (returned): one example
    per turn with its channel and span. Reuses an existing complete corpus."""
    from annotator.audio.synth import encode, silence, speak

    manifest = Path(root) / "manifest.jsonl"
    if manifest.is_file():
        return manifest
    rng = np.random.default_rng(seed)
    train, test = list(voices[:-test_voices]), list(voices[-test_voices:])
    pairs = [
        (split, a, b)
        for split, group in (("train", train), ("test", test))
        for a, b in zip(group, group[1:] + group[:1], strict=True)
        if a != b
    ]
    examples, index, gap = [], 0, silence(0.3)
    for split, a, b in pairs:
        for label in SYNTH_WORDS:
            for _ in range(per_pair):
                path = Path(root) / f"call_{index:03d}.wav"
                index += 1
                channels: list[list[np.ndarray]] = [[], []]
                at = 0.0
                for turn in range(turns):
                    spoken = "neutral" if turn >= turns - tail else label
                    text = str(rng.choice(SYNTH_WORDS[spoken]))
                    voice = (a, b)[turn % 2]
                    audio = speak(text, voice=voice, **SYNTH_PROSODY[spoken])
                    channel = turn % 2
                    channels[channel] += [audio, gap]
                    channels[1 - channel] += [silence(len(audio) / 16_000), gap]
                    end = at + len(audio) / 16_000
                    examples.append(
                        Example(
                            str(path),
                            text,
                            label,
                            voice,
                            split,
                            round(at, 3),
                            round(end, 3),
                            channel=channel,
                        )
                    )
                    at = end + len(gap) / 16_000
                encode(np.stack([np.concatenate(c) for c in channels]), path)
    tmp = manifest.with_suffix(".tmp")
    write_manifest(examples, tmp)
    tmp.rename(manifest)
    return manifest
