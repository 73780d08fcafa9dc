"""Training on the words a bundle will be served: each clip's ASR transcript, made by the ASR
``annotate`` runs (models.asr), once, cached beside the manifest (training/asr_transcripts.py),
and the items ``train.transcripts`` trains on."""

from __future__ import annotations

from pathlib import Path

import pytest

from annotator.config import ConfigError, load_config
from training.data import Example, read_manifest, write_manifest

SENTENCES = ["the bus leaves from the north station", "I am so angry I could scream"]


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    from annotator.audio.synth import encode, speak

    root = tmp_path_factory.mktemp("spoken")
    examples = []
    for k, text in enumerate(SENTENCES):
        path = root / f"{k}.wav"
        encode(speak(text), path)
        examples.append(Example(str(path), text, "neutral", "en-us", "train" if k else "dev"))
    return write_manifest(examples, root / "manifest.jsonl")


def test_asr_transcripts_are_made_once_by_the_served_asr_and_cached_beside_the_manifest(
    spoken, small_home, ray_local, monkeypatch
):
    from annotator.models.asr import Transcriber
    from training import asr_transcripts, common
    from training.data import load_audios

    config = load_config(None, models={"home": str(small_home)}, train={"transcripts": "asr"})
    examples = read_manifest(spoken)
    assert all(e.asr_transcript is None for e in examples)
    rows = common.training_rows(spoken, None, config)
    heard = [r["asr_transcript"] for r in rows]
    asr = Transcriber(common.model_path(config.models.asr.model, config), config.models.asr)
    assert heard == [t.text for t in asr(load_audios(examples))]
    assert any(h.strip() for h in heard)
    cache = Path(asr_transcripts.cache_uri(str(spoken), config))
    assert cache.is_file() and cache.parent == Path(spoken).parent  # beside the manifest
    assert read_manifest(spoken) == examples  # which is left as it was

    def refuse(*_):
        raise AssertionError("transcribed again")

    monkeypatch.setattr(asr_transcripts, "transcribe_on_ray", refuse)
    assert [r["asr_transcript"] for r in common.training_rows(spoken, None, config)] == heard
    greedy = load_config(
        None,
        models={"home": str(small_home), "asr": {"beam_size": 1}},
        train={"transcripts": "asr"},
    )
    assert asr_transcripts.cache_uri(str(spoken), greedy) != str(cache)  # other options, own file
    with pytest.raises(AssertionError, match="transcribed again"):
        common.training_rows(spoken, None, greedy)


def test_what_each_transcripts_setting_trains_on():
    from training.common import transcripts_heard

    train = Example("a.wav", "the words said", "sad", asr_transcript="the word said")
    agreed = Example("b.wav", "hello", "happy", asr_transcript="hello")
    dev = Example("c.wav", "so sad", "sad", split="dev", asr_transcript="so bad")
    examples = [train, agreed, dev]
    assert transcripts_heard(examples, "reference") == (
        examples,
        ["the words said", "hello", "so sad"],
    )
    assert transcripts_heard(examples, "asr") == (examples, ["the word said", "hello", "so bad"])
    both, texts = transcripts_heard(examples, "both")
    assert both == [train, train, agreed, dev]
    assert texts == ["the words said", "the word said", "hello", "so bad"]
    with pytest.raises(ConfigError, match="ASR transcript"):
        transcripts_heard([Example("d.wav", "x", "sad")], "asr")


def test_the_bundle_records_what_it_was_trained_on_and_old_configs_still_load():
    from training.llm import training_record

    assert (
        training_record(load_config(None, train={"transcripts": "both"}))["transcripts"] == "both"
    )
    assert load_config(None, train={"transcripts": "corpus"}).train.transcripts == "reference"
