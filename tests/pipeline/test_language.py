"""One language per recording: detected once, from the recording's first seconds of speech, by
whichever ASR actor gets a window of it.

The small profile's Whisper is English-only, so these tests use a random *multilingual* Whisper
with large-v3's token layout (``paper_shapes.build_random_whisper`` on tiny dimensions, converted
to CTranslate2): real language detection, random answers. Silence, noise and speech come out as
different languages from it, which is what lets a test tell per-window detection from
per-recording detection."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from transformers import WhisperConfig

from annotator.audio.synth import encode, silence, speak
from annotator.config import load_config
from annotator.models.asr import (
    PROBE_S,
    Transcriber,
    language_probe,
    needs_language_probe,
    probe_audio,
)
from annotator.models.paper_shapes import WHISPER_EOT, build_random_whisper
from annotator.pipeline.rows import ROW, blank_row
from annotator.pipeline.stages import ASRStage
from annotator.pipeline.windows import ingest_rows
from tests.factories import SENTENCES


@pytest.fixture(scope="session")
def multilingual_whisper(small_dir, tmp_path_factory):
    config = WhisperConfig(
        vocab_size=51_866,
        num_mel_bins=128,
        d_model=64,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_layers=2,
        decoder_attention_heads=4,
        decoder_ffn_dim=128,
        pad_token_id=WHISPER_EOT,
        bos_token_id=WHISPER_EOT,
        eos_token_id=WHISPER_EOT,
        decoder_start_token_id=WHISPER_EOT + 1,
    )
    dst = tmp_path_factory.mktemp("multilingual") / "whisper"
    build_random_whisper(dst, small_dir / "whisper", config, seed=0, quantization="float32")
    return dst


def _config(small_home, whisper, **asr):
    return load_config(
        None,
        models={
            "home": str(small_home),
            "asr": {"model": str(whisper), "compute_type": "float32", "beam_size": 1, **asr},
        },
    )


def test_probes_are_needed_only_for_a_multilingual_model_with_no_language(
    small_home, small_dir, multilingual_whisper
):
    config = _config(small_home, multilingual_whisper)
    assert needs_language_probe(config.models.asr, str(multilingual_whisper))
    forced = _config(small_home, multilingual_whisper, language="de").models.asr
    assert not needs_language_probe(forced, str(multilingual_whisper))
    english = load_config(None).models.asr
    assert not needs_language_probe(english, str(small_dir / "whisper"))
    assert not needs_language_probe(english, "distil-large-v3.en")
    assert needs_language_probe(english, "large-v3-turbo")


def test_every_window_of_a_recording_carries_its_first_seconds_of_speech(
    small_home, multilingual_whisper, tmp_path
):
    parts = []
    for text in SENTENCES * 3:
        parts += [speak(text), silence(1.2)]
    audio = np.concatenate(parts)
    path = encode(audio, tmp_path / "call.wav")
    rows = list(ingest_rows(str(path), _config(small_home, multilingual_whisper)))
    windows = [r for r in rows if r["kind"] == "window"]
    assert len(windows) >= 2
    probes = {w["language_probe"] for w in windows}
    assert len(probes) == 1  # one probe per recording, on every window
    (probe,) = probes
    assert len(probe) == PROBE_S * 16_000 * 2  # int16, the first PROBE_S s of speech
    first_speech = np.frombuffer(b"".join(w["audio"] for w in windows), np.float32)
    np.testing.assert_allclose(probe_audio(probe), first_speech[: PROBE_S * 16_000], atol=1 / 32767)
    # The English-only small profile: no probe, nothing added to the rows.
    plain = [r for r in ingest_rows(str(path), load_config(None)) if r["kind"] == "window"]
    assert [w["audio"] for w in plain] == [w["audio"] for w in windows]
    assert {w["language_probe"] for w in plain} == {b""}


def test_windows_take_their_recordings_language_whatever_their_own_audio(
    small_home, multilingual_whisper
):
    config = _config(small_home, multilingual_whisper, max_new_tokens=8)
    transcriber = Transcriber(str(multilingual_whisper), config.models.asr)
    speech = speak(SENTENCES[0])
    noise = (np.random.default_rng(0).standard_normal(4 * 16_000) * 0.3).astype(np.float32)
    quiet = np.zeros(4 * 16_000, np.float32)
    heard_alone = {
        name: transcriber.language_of(a)
        for name, a in (("speech", speech), ("noise", noise), ("quiet", quiet))
    }
    # The random model tells these apart: otherwise this test could not see a wrong language.
    assert len({lang for lang, _ in heard_alone.values()}) == 3, heard_alone

    def window(recording: str, clip: np.ndarray, probe_from: np.ndarray) -> dict:
        row = blank_row()
        row.update(
            kind="window",
            call_id=recording,
            recording_id=recording,
            audio=clip.tobytes(),
            spans=[
                {
                    "segment_index": 0,
                    "start_s": 0.0,
                    "end_s": len(clip) / 16_000,
                    "samples": len(clip),
                }
            ],
            language_probe=language_probe(probe_from),
        )
        return row

    stage = ASRStage(config)
    calls = []
    detect = stage.transcriber.language_of
    stage.transcriber.language_of = lambda audio: calls.append(1) or detect(audio)
    # Recording a starts with speech, recording b with silence; their later windows hold noise,
    # in two batches, as two batches of one recording would reach an actor.
    first = [window("a", noise, speech), window("b", noise, quiet)]
    second = [window("a", quiet, speech), window("b", speech, quiet)]
    out = []
    for batch in (first, second):
        out += stage(pa.Table.from_pylist(batch, schema=ROW)).to_pylist()
    by_recording = {"a": "speech", "b": "quiet"}
    for r in out:
        expected, prob = heard_alone[by_recording[r["recording_id"]]]
        assert r["language"] == expected, (r["recording_id"], r["start_s"])
        assert r["language_prob"] == pytest.approx(prob, abs=1e-3)  # int16 probe ≈ the audio
    assert {(r["recording_id"], r["language_prob"]) for r in out} == {
        (rec, next(r["language_prob"] for r in out if r["recording_id"] == rec)) for rec in "ab"
    }  # the very same figure on every window of a recording
    assert len(calls) == 2  # once per recording, not per window or batch
    assert "language_probe" not in out[0]
