"""The audio-classifier kind (annotator/kinds/audio_classifier/) over its small random checkpoint,
built here with the small profile's own recipe (``untrained.build_small``): its posterior is
transformers' audio-classification pipeline's, mapped; the import command writes the mapping it
is given and refuses one that does not fit; the stage serves what evaluation scores; a review
retrain on audio that carries the label lifts held-out UA above the imported bundle's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from click.testing import CliRunner

from annotator.audio.synth import encode, speak
from annotator.kinds.audio_classifier.model import (
    WEIGHTS,
    AudioClassifier,
    LabelMap,
    LabelMapError,
    Record,
    Tuning,
    resolve_mapping,
    trainable_names,
    write_audio_classifier_bundle,
)
from annotator.kinds.audio_classifier.untrained import BUNDLE, CHECKPOINT, build_small
from annotator.models.bundle import Bundle, BundleError
from training.data import Example

SUPERB = ("neu", "hap", "ang", "sad")  # the small checkpoint's id2label, in its order


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The kind's part of the small profile, built into a directory of its own: ``home/small``
    with ``audio-classifier`` and ``audio-classifier-bundle``."""
    small = tmp_path_factory.mktemp("home") / "small"
    small.mkdir()
    build_small(small, 0, lambda step: None)
    return small


@pytest.fixture(scope="module")
def home(built) -> Path:
    return built.parent


@pytest.fixture(scope="module")
def checkpoint(built) -> Path:
    return built / CHECKPOINT


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """Real speech in two voices, a tone and noise, all of different lengths."""
    rng = np.random.default_rng(0)
    t = np.arange(24_000) / 16_000
    return [
        speak("I am so happy today"),
        speak("leave me alone", voice="en-gb", pitch=80),
        (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32),
        rng.normal(0, 0.1, 8_000).astype(np.float32),
    ]


def pipeline_posteriors(checkpoint: Path, label_map: LabelMap, waves) -> np.ndarray:
    """transformers' own audio-classification pipeline over each clip, mapped onto our labels."""
    from transformers import pipeline

    classify = pipeline("audio-classification", model=str(checkpoint), top_k=None)
    rows = []
    for wave in waves:
        scores = {r["label"]: r["score"] for r in classify(wave)}
        rows.append([scores[label] for label in label_map.checkpoint_labels])
    return label_map.apply(np.array(rows))


# -- the posterior ------------------------------------------------------------------------------


def test_the_posterior_is_the_audio_classification_pipelines_mapped(built, checkpoint, clips):
    bundle = Bundle.load(built / BUNDLE)
    classifier = AudioClassifier.for_bundle(bundle, str(checkpoint))
    ours = classifier.posteriors(clips, batch=4)  # one padded batch of four lengths
    reference = pipeline_posteriors(checkpoint, classifier.record.label_map, clips)
    print(f"pipeline parity: max |Δp| {np.abs(ours - reference).max():.2e}")
    np.testing.assert_allclose(ours, reference, atol=1e-4)
    # Not a trivial match: the clips' posteriors differ from each other far more than 1e-4.
    assert np.ptp(ours, axis=0).max() > 0.05
    # Each clip alone gives what it gets in the padded batch.
    alone = np.concatenate([classifier.posteriors([c]) for c in clips])
    np.testing.assert_allclose(alone, ours, atol=1e-5)


def test_a_clip_shorter_than_one_frame_is_scored_as_itself_followed_by_silence(built, checkpoint):
    from annotator.kinds.audio_classifier.model import min_samples

    classifier = AudioClassifier.for_bundle(Bundle.load(built / BUNDLE), str(checkpoint))
    assert min_samples(classifier.model.config) == 400  # HuBERT's receptive field, 25 ms
    short = np.random.default_rng(1).normal(0, 0.1, 120).astype(np.float32)
    probs = classifier.posteriors([short, speak("hello there")])
    assert np.isfinite(probs).all()
    padded = classifier.posteriors([np.pad(short, (0, 280))])
    np.testing.assert_allclose(probs[:1], padded, atol=1e-5)


def test_the_imported_bundle_maps_superbs_labels_onto_iemocap4_and_holds_no_weights(built):
    bundle = Bundle.load(built / BUNDLE)
    record = Record.read(bundle.root)
    assert bundle.kind == "audio_classifier" and bundle.base == {
        "classifier": "small:" + CHECKPOINT
    }
    assert bundle.labels == ["neutral", "angry", "sad", "happy"]
    assert record.label_map.checkpoint_labels == SUPERB
    assert dict(record.label_map.mapping) == {
        "neu": "neutral",
        "hap": "happy",
        "ang": "angry",
        "sad": "sad",
    }
    assert not (bundle.root / WEIGHTS).exists()
    # The checkpoint's labels are in another order than ours: the mapping permutes.
    p = np.array([[0.1, 0.2, 0.3, 0.4]])  # neu, hap, ang, sad
    np.testing.assert_allclose(record.label_map.apply(p), [[0.1, 0.3, 0.4, 0.2]])


def test_the_small_checkpoint_is_the_same_bytes_for_a_seed(built, tmp_path):
    from annotator.models.profiles import file_hashes

    again = tmp_path / "again"
    again.mkdir()
    build_small(again, 0, lambda step: None)
    assert file_hashes(again) == file_hashes(built)
    other = tmp_path / "other"
    other.mkdir()
    build_small(other, 1, lambda step: None)
    changed = file_hashes(other)
    assert (
        changed[f"{CHECKPOINT}/model.safetensors"]
        != file_hashes(built)[f"{CHECKPOINT}/model.safetensors"]
    )


# -- label mappings -------------------------------------------------------------------------------


def test_unmapped_checkpoint_labels_are_dropped_and_the_rest_renormalised():
    names = ("neu", "fru", "ang", "sad", "hap", "exc")
    default = resolve_mapping(names)
    assert default.label_set == "iemocap4" and default.dropped == ("fru", "exc")  # exc: not default
    p = np.array([[0.1, 0.5, 0.1, 0.1, 0.1, 0.1]])
    np.testing.assert_allclose(default.apply(p), [[0.25, 0.25, 0.25, 0.25]])
    merged = resolve_mapping(names, "neu=neutral,ang=angry,sad=sad,hap=happy,exc=happy")
    assert merged.dropped == ("fru",)
    np.testing.assert_allclose(merged.apply(p), [[0.2, 0.2, 0.2, 0.4]])


def test_a_meld_checkpoint_maps_by_name_onto_the_largest_set_it_fills():
    meld = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
    assert resolve_mapping(meld).label_set == "meld7"
    assert resolve_mapping(meld, label_set_name="meld4").dropped == ("disgust", "fear", "surprise")


@pytest.mark.parametrize(
    ("names", "mapping", "message"),
    [
        (SUPERB, "neu=neutral,ang=angry,sad=sad", "leaves happy"),
        (SUPERB, "neu=neutral,ang=angry,sad=sad,joy=happy", "no label 'joy'"),
        (SUPERB, "neu=neutral,ang=angry,sad=sad,hap=glad", "not those of one label set"),
        (SUPERB, "neu neutral", "CHECKPOINT_LABEL=OUR_LABEL"),
        (("LABEL_0", "LABEL_1"), None, "give the mapping"),
        (("neu", "ang", "sad", "exc"), None, "give the mapping"),
    ],
)
def test_a_mapping_that_does_not_fit_is_refused_naming_why(names, mapping, message):
    with pytest.raises(LabelMapError, match=message):
        resolve_mapping(names, mapping)


# -- the import command ---------------------------------------------------------------------------


def test_import_writes_the_mapping_it_is_given(checkpoint, home, tmp_path, clips):
    from annotator.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"models": {"home": str(home)}}))
    out = tmp_path / "bundle"
    labels = "neu=neutral,ang=angry,sad=sad,hap=happy"
    args = ["models", "import", "audio-classifier", str(checkpoint), "--out", str(out)]
    run = CliRunner().invoke(main, [*args, "--labels", labels, "--config", str(config)])
    assert run.exit_code == 0, run.output
    bundle = Bundle.load(out)
    assert bundle.version in run.output and "neu→neutral" in run.output
    assert bundle.labels == ["neutral", "angry", "sad", "happy"]
    assert bundle.base == {"classifier": str(checkpoint.resolve())}
    record = Record.read(out)
    assert record.label_map.mapping == {
        "neu": "neutral",
        "ang": "angry",
        "sad": "sad",
        "hap": "happy",
    }
    # By the profile's name it writes the small profile's bundle, byte for byte the same record.
    small = tmp_path / "small-bundle"
    args = ["models", "import", "audio-classifier", "small:" + CHECKPOINT, "--out", str(small)]
    run = CliRunner().invoke(main, [*args, "--config", str(config)])
    assert run.exit_code == 0, run.output
    assert Bundle.load(small).version == Bundle.load(home / "small" / BUNDLE).version


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--labels", "neu=neutral,ang=angry,sad=sad"], "leaves happy"),
        (["--labels", "neu=neutral,ang=angry,sad=sad,hap=happy", "--label-set", "meld4"], "meld4"),
        (["--top-layers", "3"], "has 2 layers"),
    ],
)
def test_import_refuses_a_bad_mapping_cleanly(checkpoint, home, tmp_path, extra, message):
    from annotator.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"models": {"home": str(home)}}))
    out = tmp_path / "bundle"
    args = ["models", "import", "audio-classifier", str(checkpoint), "--out", str(out)]
    run = CliRunner().invoke(main, [*args, *extra, "--config", str(config)])
    assert run.exit_code == 2, run.output
    assert "Error" in run.output and message in run.output and "Traceback" not in run.output
    assert isinstance(run.exception, SystemExit)  # click's clean exit, no uncaught error
    assert not out.exists()


def test_import_refuses_what_is_not_an_audio_classifier(not_a_checkpoint, home, tmp_path):
    from annotator.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"models": {"home": str(home)}}))
    args = [
        "models",
        "import",
        "audio-classifier",
        str(not_a_checkpoint),
        "--out",
        str(tmp_path / "b"),
    ]
    run = CliRunner().invoke(main, [*args, "--config", str(config)])
    assert run.exit_code == 1 and "is not a transformers checkpoint" in run.output, run.output


def test_import_refuses_a_checkpoint_without_a_classification_head(home, tmp_path):
    from transformers import HubertConfig, HubertModel

    from annotator.cli import main
    from annotator.models.profiles import SmallSizes, encoder_shape

    encoder = tmp_path / "encoder"
    HubertModel(HubertConfig(**encoder_shape(SmallSizes(), 1))).save_pretrained(encoder)
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"models": {"home": str(home)}}))
    args = ["models", "import", "audio-classifier", str(encoder), "--out", str(tmp_path / "b")]
    run = CliRunner().invoke(main, [*args, "--labels", "LABEL_0=neutral", "--config", str(config)])
    assert run.exit_code == 1 and "no classification head" in run.output, run.output


@pytest.fixture
def not_a_checkpoint(tmp_path) -> Path:
    """A directory that is no checkpoint at all."""
    (tmp_path / "nothing").mkdir()
    return tmp_path / "nothing"


# -- tuned weights over the checkpoint ------------------------------------------------------------


def test_tuned_tensors_lay_over_the_checkpoint_and_nothing_else_does(
    built, checkpoint, clips, tmp_path
):
    bundle = Bundle.load(built / BUNDLE)
    record = Record.read(bundle.root)
    torch.manual_seed(5)
    weights = {"classifier.weight": torch.randn(4, 64), "classifier.bias": torch.randn(4)}
    tuned = write_audio_classifier_bundle(
        tmp_path / "tuned", str(checkpoint), record.label_map, Tuning(), weights
    )
    before = AudioClassifier.for_bundle(bundle, str(checkpoint)).posteriors(clips)
    after = AudioClassifier.for_bundle(tuned, str(checkpoint))
    assert torch.equal(after.model.classifier.weight, weights["classifier.weight"])
    assert np.abs(after.posteriors(clips) - before).max() > 0.01
    # A tensor the checkpoint lacks, or a checkpoint with other labels: another checkpoint.
    odd = write_audio_classifier_bundle(
        tmp_path / "odd",
        str(checkpoint),
        record.label_map,
        Tuning(),
        {"head.weight": torch.ones(2)},
    )
    with pytest.raises(BundleError, match="tuned over another checkpoint"):
        AudioClassifier.for_bundle(odd, str(checkpoint))
    relabelled = tmp_path / "relabelled"
    shutil.copytree(checkpoint, relabelled)
    config = json.loads((relabelled / "config.json").read_text())
    config["id2label"] = {"0": "neu", "1": "ang", "2": "hap", "3": "sad"}
    (relabelled / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="another checkpoint than it was written for"):
        AudioClassifier.for_bundle(bundle, str(relabelled))


def test_retraining_tunes_the_head_and_with_top_layers_the_encoders_last(checkpoint):
    from transformers import AutoModelForAudioClassification

    model = AutoModelForAudioClassification.from_pretrained(checkpoint, use_safetensors=True)
    head = trainable_names(model, Tuning())
    assert head and all(n.split(".")[0] in ("projector", "classifier") for n in head)
    with_top = set(trainable_names(model, Tuning(top_layers=1))) - set(head)
    assert with_top and all(n.startswith("hubert.encoder.layers.1.") for n in with_top)
    with pytest.raises(ValueError, match="has 2"):
        trainable_names(model, Tuning(top_layers=3))


# -- the stage and scoring ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wav_examples(clips, tmp_path_factory) -> list[Example]:
    root = tmp_path_factory.mktemp("clips")
    examples = []
    for k, clip in enumerate(clips):
        path = encode(clip, root / f"clip{k}.wav")
        examples.append(
            Example(str(path), "", ("neutral", "angry", "sad", "happy")[k], split="test")
        )
    return examples


def test_the_stage_serves_what_evaluation_scores(built, home, wav_examples):
    from annotator.config import load_config
    from annotator.kinds.audio_classifier.scoring import posteriors
    from annotator.kinds.audio_classifier.stage import AudioClassifierStage
    from annotator.pipeline.rows import ROW, blank_row
    from training.data import load_audios

    config = load_config(None, models={"home": str(home), "bundle": str(built / BUNDLE)})
    stage = AudioClassifierStage(config)
    rows = []
    for k, audio in enumerate(load_audios(wav_examples)):
        row = blank_row()
        row.update(kind="segment", call_id="c", recording_id="r", segment_index=k)
        row["audio"] = audio.tobytes()
        rows.append(row)
        if k == 1:
            error = blank_row()
            error.update(kind="error", call_id="c", recording_id="r", message="bad")
            rows.append(error)
    out = stage(pa.Table.from_pylist(rows, schema=ROW))
    assert "audio" not in out.column_names and "audio_classifier_at" in out.column_names
    out = out.to_pylist()
    segments = [r for r in out if r["kind"] == "segment"]
    served = np.array([[p["prob"] for p in r["emotion_probs"]] for r in segments])
    scored, texts = posteriors(config, stage.bundle, wav_examples)
    np.testing.assert_allclose(served, scored, atol=1e-6)
    assert texts == [""] * len(wav_examples)
    for row in segments:
        assert (
            row["audio_only"] and [p["label"] for p in row["emotion_probs"]] == stage.bundle.labels
        )
        assert row["emotion"] == max(row["emotion_probs"], key=lambda p: p["prob"])["label"]
    error = next(r for r in out if r["kind"] == "error")
    assert error["emotion"] == "" and error["emotion_probs"] == []
    silent, _ = posteriors(config, stage.bundle, wav_examples, ablate="audio")
    assert np.abs(silent - scored).max() > 0.01
    with pytest.raises(ValueError, match="hears no transcript"):
        posteriors(config, stage.bundle, wav_examples, ablate="text")


def test_eval_scores_the_calibrated_posterior(built, home, wav_examples, tmp_path):
    from annotator.config import load_config
    from annotator.models.bundle import with_calibration
    from annotator.models.calibration import scaled
    from training.evaluate import posteriors

    config = load_config(None, models={"home": str(home)})
    raw, _ = posteriors(config, built / BUNDLE, wav_examples)
    calibrated = with_calibration(
        Bundle.load(built / BUNDLE), tmp_path / "cal", {"temperature": 2.0}
    )
    cal, _ = posteriors(config, calibrated.root, wav_examples)
    np.testing.assert_allclose(cal, scaled(raw, 2.0), atol=1e-9)


# -- review retrain on Ray Train ------------------------------------------------------------------


def test_review_retrain_lifts_held_out_ua_above_the_imported_bundles(
    built, home, checkpoint, synth_manifest, ray_local, tmp_path
):
    """``review retrain``'s own path (training/review.py): the kind fine-tunes the served bundle
    on the train split on Ray Train (2 CPU workers, 6 epochs of the head alone), then one
    evaluation actor scores old and new on the held-out voices as served. Audio carries the label
    (the synthetic corpus: each emotion's prosody and words, spoken)."""
    from safetensors.torch import load_file

    from annotator.config import load_config
    from annotator.models.profiles import file_hashes
    from training.review import retrain_from_review

    config = load_config(
        None,
        models={"home": str(home)},
        train={"storage": str(tmp_path / "checkpoints"), "epochs_stage2": 6},
    )
    start = Bundle.load(built / BUNDLE)
    checkpoint_before = file_hashes(checkpoint)
    result = retrain_from_review(config, synth_manifest, start.root, tmp_path / "new", "ac-review")
    new = Bundle.load(tmp_path / "new")
    assert result["old"]["bundle"] == start.version and result["new"]["bundle"] == new.version
    assert new.kind == "audio_classifier" and new.base == start.base
    assert new.extra["retrained_from"] == start.version != new.version
    assert new.extra["manifest"] == str(synth_manifest)
    model = AudioClassifier.for_bundle(start, str(checkpoint)).model
    assert set(load_file(new.root / WEIGHTS)) == set(trainable_names(model, Tuning()))
    assert file_hashes(checkpoint) == checkpoint_before  # the checkpoint itself is untouched
    print(f"held-out UA {result['old']['ua']:.3f} → {result['new']['ua']:.3f}")
    assert result["new"]["ua"] > result["old"]["ua"] + 0.1


# -- annotate, end to end -------------------------------------------------------------------------


def test_annotate_serves_the_small_profiles_imported_bundle(
    corpus, small_home, ray_local, tmp_path
):
    """The graph follows the bundle's kind: ASR, then the audio-classifier stage (no features,
    no vLLM). Every segment row says which bundle labelled it, from the audio alone, with the
    posterior evaluation gives the same span of the same file."""
    from annotator.config import load_config
    from annotator.kinds.audio_classifier.scoring import posteriors
    from annotator.pipeline.run import annotate
    from annotator.query import Annotations

    root, spoken = corpus
    out = tmp_path / "out"
    config = load_config(
        None, output=str(out), models={"home": str(small_home), "bundle": "small:" + BUNDLE}
    )
    summary = annotate(config, [str(root)])
    assert set(summary.counts.placement) == {"asr", "audio_classifier"}
    bundle = Bundle.load(small_home / "small" / BUNDLE)
    ann = Annotations(str(out))
    rows = ann.sql(
        "SELECT source_uri, member, channel, start_s, end_s, bundle_kind, bundle_version, "
        "audio_only, emotion, emotion_probs, text, llm_model FROM segments ORDER BY ALL"
    ).fetchall()
    ann.close()
    assert {(uri, member) for uri, member, *_ in rows} == set(spoken)
    for *_, kind, version, audio_only, emotion, probs, text, llm in rows:
        assert kind == "audio_classifier" and version == bundle.version
        assert audio_only and text and llm == ""  # transcribed, labelled from the audio
        assert [p["label"] for p in probs] == bundle.labels
        assert emotion == max(probs, key=lambda p: p["prob"])["label"]
    assert any(member for _, member, *_ in rows)  # evaluation cuts archive members' spans too
    examples = [
        Example(uri, "", "neutral", start_s=a, end_s=b, channel=ch, member=member)
        for uri, member, ch, a, b, *_ in rows
    ]
    scored, _ = posteriors(config, bundle, examples)
    served = np.array([[p["prob"] for p in r[9]] for r in rows])
    print(f"annotate vs eval, {len(rows)} segments: max |Δp| {np.abs(served - scored).max():.2e}")
    np.testing.assert_allclose(served, scored, atol=1e-3)


def test_train_command_tunes_the_top_layers_it_is_asked_for(
    built, home, checkpoint, synth_manifest, ray_local, tmp_path
):
    """``annotator train audio-classifier --top-layers 1`` (one epoch): the new bundle holds the
    head and the encoder's last layer, changed, and nothing of the layers below."""
    from safetensors.torch import load_file

    from annotator.cli import main

    config = tmp_path / "config.yaml"
    train = {"storage": str(tmp_path / "checkpoints"), "epochs_stage2": 1}
    config.write_text(json.dumps({"models": {"home": str(home)}, "train": train}))
    out = tmp_path / "tuned"
    args = ["train", "audio-classifier", "--manifest", str(synth_manifest), "--out", str(out)]
    run = CliRunner().invoke(main, [*args, "--top-layers", "1", "--config", str(config)])
    assert run.exit_code == 0, run.output
    bundle = Bundle.load(out)
    assert bundle.version in run.output
    assert Record.read(out).tuning.top_layers == 1
    assert bundle.extra["retrained_from"] == Bundle.load(built / BUNDLE).version
    tuned = load_file(out / WEIGHTS)
    original = load_file(checkpoint / "model.safetensors")
    layer = {k for k in tuned if k.startswith("hubert.")}
    assert layer and all(k.startswith("hubert.encoder.layers.1.") for k in layer)
    assert {k.split(".")[0] for k in set(tuned) - layer} == {"projector", "classifier"}
    assert any(not torch.equal(tuned[k], original[k]) for k in layer)
