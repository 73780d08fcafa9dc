"""Manifest readers over tiny copies of the corpus layouts."""

from __future__ import annotations

import pytest

from training.data import (
    Example,
    ManifestError,
    iemocap_manifest,
    meld_manifest,
    read_manifest,
    write_manifest,
)


def test_iemocap_layout_merges_excited_into_happy_and_folds_by_session(tmp_path):
    for n, (utt, emo) in enumerate([("F000", "exc"), ("M001", "fru"), ("F002", "ang")], 1):
        session = tmp_path / f"Session{n}"
        dialog = f"Ses0{n}F_impro01"
        (session / "dialog" / "EmoEvaluation").mkdir(parents=True)
        (session / "dialog" / "transcriptions").mkdir(parents=True)
        (session / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text(
            f"% header\n[6.2901 - 8.2357]\t{dialog}_{utt}\t{emo}\t[2.5000, 2.5000, 2.5000]\n"
        )
        (session / "dialog" / "transcriptions" / f"{dialog}.txt").write_text(
            f"{dialog}_{utt} [006.2901-008.2357]: Excuse me.\n"
        )
    examples = iemocap_manifest(tmp_path, test_session=3)
    assert [(e.label, e.fold, e.split) for e in examples] == [
        ("happy", 1, "train"),
        ("angry", 3, "test"),
    ]
    assert examples[0].transcript == "Excuse me."
    assert examples[0].audio_uri.endswith(
        "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    )
    with pytest.raises(ManifestError, match="Session1"):
        iemocap_manifest(tmp_path / "nothing")


def test_meld_layout_official_splits_and_four_classes(tmp_path):
    header = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"
    for split, name in (("train", "train"), ("dev", "dev"), ("test", "test")):
        (tmp_path / f"{name}_sent_emo.csv").write_text(
            header + f'1,"Oh, {split}!",Joey,joy,positive,3,4\n2,What?,Ross,surprise,neutral,3,5\n'
        )
    seven = meld_manifest(tmp_path, classes=7)
    four = meld_manifest(tmp_path, classes=4)
    assert len(seven) == 6 and len(four) == 3
    assert {e.split for e in four} == {"train", "dev", "test"}
    assert four[0].audio_uri.endswith("train/dia3_utt4.wav") and four[0].transcript == "Oh, train!"


def test_manifest_round_trip_and_errors(tmp_path):
    path = write_manifest([Example("a.wav", "hi", "sad", start_s=1.0, end_s=2.0)], tmp_path / "m")
    assert read_manifest(path, ["sad"])[0].end_s == 2.0
    with pytest.raises(ManifestError, match=":1: label 'sad'"):
        read_manifest(path, ["happy"])
    path.write_text('{"audio_uri": "a", "transcript": "", "label": "sad", "colour": 1}\n')
    with pytest.raises(ManifestError, match="colour"):
        read_manifest(path)
