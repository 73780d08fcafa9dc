"""Two-stage retraining on Ray Train (2 CPU workers) over the synthetic espeak-ng corpus whose
emotion is in the words only (flat prosody), the exported bundle evaluated as served (vLLM), with
the transcript or the audio taken away, and through the annotate pipeline.

What only the prosody carries reaches e through stage 1 (tests/training/test_audio_path.py); the
whole model served on the prosody-only corpus is not yet reliable (benchmarks/paths.py reports it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from annotator.config import load_config
from training.data import read_manifest

pytestmark = pytest.mark.vllm


def _config(small_home, storage, **train):
    return load_config(
        None,
        models={"home": str(small_home)},
        train={"storage": str(storage), "epochs_stage1": 3, "epochs_stage2": 8, **train},
    )


@pytest.fixture(scope="session")
def trained(wording_manifest, small_home, ray_local, tmp_path_factory):
    from annotator.kinds.emoq.export import export_bundle
    from annotator.kinds.emoq.stage1 import train_stage1
    from annotator.kinds.emoq.stage2 import train_stage2

    work = tmp_path_factory.mktemp("retrain")
    config = _config(small_home, work / "checkpoints")
    t0 = time.perf_counter()
    stage1 = train_stage1(config, wording_manifest, work / "stage1")
    t1 = time.perf_counter()
    checkpoint = train_stage2(config, wording_manifest, stage1)
    t2 = time.perf_counter()
    bundle = export_bundle(config, stage1, checkpoint, work / "bundle")
    print(f"training wall time: stage 1 {t1 - t0:.0f} s, stage 2 {t2 - t1:.0f} s")
    return config, bundle


@pytest.fixture(scope="session")
def trained_labeler(trained, small_dir):
    from annotator.models.labeler.vllm import VLLMLabeler

    _, bundle = trained
    labeler = VLLMLabeler(small_dir / "llm", bundle.emotion_token_ids, bundle.lora_dir)
    yield labeler
    labeler.close()


@pytest.fixture(scope="session")
def trained_eval(trained, trained_labeler, wording_manifest, tmp_path_factory):
    """The trained bundle evaluated in this process on the held-out voices: (result, out dir)."""
    from training.evaluate import evaluate

    config, bundle = trained
    held_out = [e for e in read_manifest(wording_manifest) if e.split == "test"]
    out = tmp_path_factory.mktemp("eval")
    return evaluate(config, bundle.root, held_out, out, trained_labeler), out


def test_trained_bundle_recognises_held_out_voices(trained_eval, wording_manifest):
    result, out = trained_eval
    held_out = [e for e in read_manifest(wording_manifest) if e.split == "test"]
    train_voices = {e.speaker for e in read_manifest(wording_manifest) if e.split == "train"}
    assert not train_voices & {e.speaker for e in held_out}  # speaker-independent split
    print(f"trained: UA {result['ua']:.3f} WA {result['wa']:.3f} WF1 {result['wf1']:.3f}")
    assert result["ua"] >= 0.9
    written = json.loads((out / "eval.json").read_text())
    assert written["ua"] == result["ua"] and (out / "confusion.png").is_file()
    assert np.allclose(np.asarray(result["posteriors"]).sum(axis=1), 1, atol=1e-4)


def test_what_the_words_carry_is_learned_through_the_transcript(
    trained, trained_labeler, trained_eval, wording_manifest
):
    """The paper's text path, proven by taking it away: blanking every transcript (in the
    EmoQ-Former and the prompt) drops the held-out score to chance, while silencing the audio
    keeps it (the audio carries nothing here). Were the transcript disconnected, training could
    not have reached the full score; were the audio path all the model used, blanking would not
    matter."""
    from training.evaluate import evaluate

    config, bundle = trained
    full, _ = trained_eval
    held_out = [e for e in read_manifest(wording_manifest) if e.split == "test"]
    no_text = evaluate(config, bundle.root, held_out, None, trained_labeler, ablate="text")
    no_audio = evaluate(config, bundle.root, held_out, None, trained_labeler, ablate="audio")
    print(f"UA full {full['ua']:.3f} · no text {no_text['ua']:.3f} · no audio {no_audio['ua']:.3f}")
    assert full["ua"] >= 0.9
    assert no_text["ua"] <= 0.4  # chance is 0.25
    assert no_audio["ua"] >= 0.9


def test_evaluation_in_a_ray_actor_scores_as_in_process(
    trained, trained_eval, wording_manifest, tmp_path
):
    """``annotator eval``'s path: the models load in a Ray actor with its own vLLM; the driver
    gets the same scores and posteriors as the in-process evaluation and writes them."""
    from training.evaluate import evaluate_on_ray

    config, bundle = trained
    expected, _ = trained_eval
    held_out = [e for e in read_manifest(wording_manifest) if e.split == "test"]
    result = evaluate_on_ray(config, bundle.root, held_out, tmp_path / "eval")
    for key in ("bundle_version", "examples", "labels", "wa", "ua", "wf1", "confusion", "texts"):
        assert result[key] == expected[key], key
    np.testing.assert_allclose(result["posteriors"], expected["posteriors"], atol=1e-5)
    assert json.loads((tmp_path / "eval" / "eval.json").read_text()) == result
    assert (tmp_path / "eval" / "confusion.png").is_file()


def test_untrained_bundle_stays_near_chance(trained, trained_labeler, small_dir, wording_manifest):
    from training.evaluate import evaluate

    config, _ = trained

    class BaseLLM:  # the untrained bundle's LoRA is zero: serving it is serving the base LLM
        def posteriors(self, embeds):
            return trained_labeler.posteriors(embeds, with_lora=False)

    held_out = [e for e in read_manifest(wording_manifest) if e.split == "test"]
    result = evaluate(config, small_dir / "bundle", held_out, None, BaseLLM())
    print(f"untrained: UA {result['ua']:.3f}")
    assert result["ua"] <= 0.5


def test_exported_bundle_annotates_with_the_eval_posteriors(
    trained, trained_labeler, wording_manifest, tmp_path
):
    from annotator.pipeline.run import annotate
    from training.data import from_annotations
    from training.evaluate import posteriors

    config, bundle = trained
    files = [e.audio_uri for e in read_manifest(wording_manifest) if e.split == "test"][::4]
    out = tmp_path / "out"
    run_config = config.model_copy(
        update={
            "output": str(out),
            "models": config.models.model_copy(update={"bundle": str(bundle.root)}),
        }
    )
    summary = annotate(run_config, files)
    assert summary.counts.errors == 0
    segments = list(from_annotations(str(out), where="true"))
    assert segments and all(ex.start_s is not None for ex in segments)
    probs, _ = posteriors(config, bundle.root, segments, trained_labeler)
    from annotator.query import Annotations

    rows = Annotations(str(out)).sql(  # from_annotations' order: by source, channel, time
        "SELECT emotion_probs FROM segments ORDER BY source_uri, channel NULLS FIRST, start_s"
    )
    served = np.array([[p["prob"] for p in row[0]] for row in rows.fetchall()])
    np.testing.assert_allclose(served, probs, atol=1e-4)


def test_trained_checkpoint_exports_as_the_whole_model_did(trained, tmp_path):
    """The fixture's bundle (exported from the checkpoint's tensors) is the bundle that loading
    the checkpoint into the whole stage-2 model and saving its parts writes, byte for byte."""
    from tests.factories import assert_same_bundle, export_bundle_by_model
    from training.common import latest_checkpoint

    config, bundle = trained
    checkpoint = latest_checkpoint(config.train.storage, "stage2")
    stage1 = Path(bundle.root).parent / "stage1"
    reference = export_bundle_by_model(config, stage1, checkpoint, tmp_path / "bundle")
    assert_same_bundle(bundle.root, reference.root)
    assert bundle.version == reference.version


def test_training_keeps_only_the_newest_checkpoints(trained):
    """12 stage-2 epochs, ``keep_checkpoints`` 2: the two newest stay, the rest are deleted (each
    holds the optimizer state: hundreds of MB at the small profile)."""
    config, _ = trained
    assert config.train.keep_checkpoints == 2
    for run, epochs in (
        ("stage1", config.train.epochs_stage1),
        ("stage2", config.train.epochs_stage2),
    ):
        kept = sorted(
            json.loads(p.read_text())["epoch"]
            for p in Path(config.train.storage, run).glob("checkpoint_*/progress.json")
        )
        assert kept == [epochs - 2, epochs - 1], run


def test_stopped_stage2_resumes_from_its_s3_checkpoint(
    trained, wording_manifest, small_home, s3_server, tmp_path
):
    """Checkpoints go to S3 (moto on loopback). A run stopped after its first epoch resumes from
    its newest checkpoint there (epoch 0 is not trained again), and the final checkpoint is
    downloaded to one fixed place per run name, not to a fresh temp directory."""
    import shutil

    from annotator.kinds.emoq.stage2 import train_stage2
    from tests.factories import make_bucket, one_per_voice_and_label, s3_filesystem

    make_bucket(s3_server, "train-ckpt")
    config = _config(
        small_home, "s3://train-ckpt/runs", epochs_stage2=2, keep_checkpoints=3
    ).model_copy(update={"s3": s3_server})
    stage1 = Path(trained[1].root).parent / "stage1"
    fs = s3_filesystem(s3_server)

    def stored_epochs() -> list[int]:
        pattern = "train-ckpt/runs/s3-resume/checkpoint_*/progress.json"
        return sorted(json.loads(fs.cat(p))["epoch"] for p in fs.glob(pattern))

    # Where the checkpoints go and which one resumes is the point, not what is learned.
    manifest = one_per_voice_and_label(wording_manifest, tmp_path / "manifest.jsonl")
    try:
        train_stage2(config, manifest, stage1, name="s3-resume", stop_after_epochs=1)
        assert stored_epochs() == [0]
        final = train_stage2(config, manifest, stage1, name="s3-resume")
        assert Path(final) == small_home / "train-downloads" / "s3-resume"
        assert json.loads(Path(final, "progress.json").read_text())["epoch"] == 1
        # Retrained from scratch, the run would have stored epochs 0, 0, 1.
        assert stored_epochs() == [0, 1]
    finally:
        shutil.rmtree(small_home / "train-downloads", ignore_errors=True)
