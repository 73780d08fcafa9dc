"""Training data: one manifest format and readers for IEMOCAP, MELD and annotator output (the
synthetic espeak-ng corpora are in training/synthetic_corpora.py).

A manifest is JSON Lines, one utterance per line::

    {"audio_uri": "...", "start_s": 1.2, "end_s": 4.0, "transcript": "...", "label": "angry",
     "speaker": "Ses01F", "split": "train", "fold": 1}

``start_s``/``end_s`` may be null (the whole file). ``split`` is train/dev/test; ``fold`` is the
IEMOCAP session for leave-one-session-out, else null. Optional: ``channel`` (one channel of a
multi-channel file; null: the channels mixed) and ``member`` (the recording is that member of the
tar/zip archive ``audio_uri`` names: read from the archive, never extracted).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class Example:
    audio_uri: str
    transcript: str
    label: str
    speaker: str = ""
    split: str = "train"
    start_s: float | None = None
    end_s: float | None = None
    fold: int | None = None
    channel: int | None = None  # one channel of a multi-channel source; None: channels mixed
    member: str = ""  # a member of the archive audio_uri names; "": audio_uri is the recording
    # What the served ASR makes of the clip (training/asr_transcripts.py): set for training on
    # ASR transcripts (train.transcripts asr | both); a manifest may carry it.
    asr_transcript: str | None = None

    @property
    def recording(self) -> str:
        """Where the example's audio is, as one name: ``audio_uri``, or ``audio_uri!member``."""
        from annotator.audio.sources import recording_name

        return recording_name(self.audio_uri, self.member)


class ManifestError(ValueError):
    """A manifest or corpus layout that cannot be read; the message names the file and line."""


def write_manifest(examples: Iterable[Example], path: Path | str, s3=None) -> Path | str:
    """Write ``examples`` as JSON Lines to ``path``: a local file, or an ``s3://`` object
    (streamed in parts)."""
    from annotator.storage import filesystem, is_remote

    if is_remote(path):
        fs, key = filesystem(str(path), s3)
        opened = fs.open(key, "w")
    else:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        opened = path.open("w")
    with opened as handle:
        for ex in examples:
            row = asdict(ex)
            if row["asr_transcript"] is None:  # only where known: manifests stay as they were
                del row["asr_transcript"]
            handle.write(json.dumps(row, sort_keys=True) + "\n")
    return path


def read_manifest(path: Path | str, labels: Sequence[str] | None = None, s3=None) -> list[Example]:
    """The examples of the manifest at ``path`` (a local file or an ``s3://`` object)."""
    from annotator.storage import StorageError, read_text

    try:
        text = read_text(path, s3)
    except StorageError as exc:
        raise ManifestError(str(exc)) from None
    return examples_of(text.splitlines(), labels, str(path))


def manifest_rows(examples: Iterable[Example]) -> list[dict]:
    """Examples as plain rows: how a manifest travels to Ray workers (with their config, never
    as a path of the driver's disk); :func:`examples_of` reads them back."""
    return [asdict(ex) for ex in examples]


def examples_of(
    lines: Iterable[str | dict], labels: Sequence[str] | None = None, where: str = "manifest"
) -> list[Example]:
    """Examples from manifest lines (JSON text) or rows (dicts), checked field by field."""
    examples = []
    fields = set(Example.__dataclass_fields__)
    for number, line in enumerate(lines, 1):
        if isinstance(line, str) and not line.strip():
            continue
        try:
            data = json.loads(line) if isinstance(line, str) else line
            unknown = set(data) - fields
            if unknown:
                raise ManifestError(f"unknown fields {sorted(unknown)}")
            ex = Example(**data)
        except (json.JSONDecodeError, TypeError, ManifestError) as exc:
            raise ManifestError(f"{where}:{number}: {exc}") from None
        if labels is not None and ex.label not in labels:
            raise ManifestError(f"{where}:{number}: label {ex.label!r} not in {list(labels)}")
        examples.append(ex)
    return examples


def _source_clips(uri: str, wanted: dict, audio=None, s3=None) -> dict[str, list[np.ndarray]]:
    """Each member's (``""``: the file's) spans of one source, (channels, samples), the source
    read once (annotator/audio/clips.py)."""
    from annotator.audio.clips import source_clips

    return source_clips(uri, wanted, audio, s3)


def _span(ex: Example) -> tuple[int, int | None]:
    start = 0 if ex.start_s is None else round(ex.start_s * 16_000)
    return start, None if ex.end_s is None else round(ex.end_s * 16_000)


def _channel(ex: Example, channels: np.ndarray) -> np.ndarray:
    if ex.channel is None:
        audio = channels.mean(axis=0)
    elif ex.channel < channels.shape[0]:
        audio = channels[ex.channel]
    else:
        raise ManifestError(
            f"{ex.recording} has {channels.shape[0]} channel(s); the example asks for channel "
            f"{ex.channel}"
        )
    return np.ascontiguousarray(audio, dtype=np.float32)


def load_audio(ex: Example, s3=None, audio=None) -> np.ndarray:
    """The example's 16 kHz samples: its channel (or the channels mixed), whole or its
    start_s..end_s span."""
    return load_audios([ex], s3, audio)[0]


def load_audios(examples: Sequence[Example], s3=None, audio=None) -> list[np.ndarray]:
    """:func:`load_audio` of each example, with bounded memory: each source is read once for
    all of its examples in ``examples`` (wherever they stand in the list: the segments of a
    recording, both channels of a call, the calls of an archive), streamed, keeping only their
    spans, and stopping after the last one; an archive's members are read from it (``audio``:
    its safety and size bounds, the run's :class:`~annotator.config.AudioConfig`), each decoded
    once. The clips come back in the order of ``examples``."""
    by_source: dict[str, dict[str, list[int]]] = {}
    for k, ex in enumerate(examples):
        by_source.setdefault(ex.audio_uri, {}).setdefault(ex.member, []).append(k)
    out: list[np.ndarray | None] = [None] * len(examples)
    for uri, members in by_source.items():
        wanted = {
            member: sorted({_span(examples[k]) for k in indices}, key=lambda s: (s[0], s[1] or 0))
            for member, indices in members.items()
        }
        clips = _source_clips(uri, wanted, audio, s3)
        for member, indices in members.items():
            cut = dict(zip(wanted[member], clips[member], strict=True))
            for k in indices:
                out[k] = _channel(examples[k], cut[_span(examples[k])])
    return out


# -- IEMOCAP -----------------------------------------------------------------------------------

IEMOCAP_MAP = {"neu": "neutral", "ang": "angry", "sad": "sad", "hap": "happy", "exc": "happy"}
_IEMOCAP_EVAL = re.compile(r"^\[(\d+\.\d+) - (\d+\.\d+)\]\t(\S+)\t(\w+)\t")
_IEMOCAP_TEXT = re.compile(r"^(\S+) \[[\d.]+-[\d.]+\]: (.*)$")


def iemocap_manifest(root: Path, test_session: int = 5) -> list[Example]:
    """IEMOCAP 4 classes (happy and excited merged), from the release layout::

        Session{1..5}/dialog/EmoEvaluation/<dialog>.txt
        Session{1..5}/dialog/transcriptions/<dialog>.txt
        Session{1..5}/sentences/wav/<dialog>/<utterance>.wav

    ``fold`` is the session; ``split`` is test for ``test_session`` (leave-one-session-out: run
    five times with test_session 1..5), train otherwise. Other emotions are left out.
    """
    examples = []
    sessions = sorted(Path(root).glob("Session[1-5]"))
    if not sessions:
        raise ManifestError(f"{root}: no Session1..Session5 directories (IEMOCAP layout)")
    for session in sessions:
        fold = int(session.name[-1])
        for evaluation in sorted((session / "dialog" / "EmoEvaluation").glob("*.txt")):
            dialog = evaluation.stem
            texts = {}
            transcript_file = session / "dialog" / "transcriptions" / f"{dialog}.txt"
            if transcript_file.is_file():
                for line in transcript_file.read_text(errors="replace").splitlines():
                    if m := _IEMOCAP_TEXT.match(line.strip()):
                        texts[m.group(1)] = m.group(2)
            for line in evaluation.read_text(errors="replace").splitlines():
                m = _IEMOCAP_EVAL.match(line)
                if not m or m.group(4) not in IEMOCAP_MAP:
                    continue
                utt = m.group(3)
                wav = session / "sentences" / "wav" / dialog / f"{utt}.wav"
                examples.append(
                    Example(
                        audio_uri=str(wav),
                        transcript=texts.get(utt, ""),
                        label=IEMOCAP_MAP[m.group(4)],
                        speaker=f"Ses{fold:02d}{utt.split('_')[-1][0]}",
                        split="test" if fold == test_session else "train",
                        fold=fold,
                    )
                )
    return examples


# -- MELD --------------------------------------------------------------------------------------

MELD4 = {"neutral": "neutral", "anger": "anger", "sadness": "sadness", "joy": "joy"}
MELD_SPLITS = {
    "train": "train_sent_emo.csv",
    "dev": "dev_sent_emo.csv",
    "test": "test_sent_emo.csv",
}


def meld_manifest(root: Path, classes: int = 7, audio_ext: str = ".wav") -> list[Example]:
    """MELD with its official splits, 7 classes or the 4-class subset, from::

        {train,dev,test}_sent_emo.csv
        {train,dev,test}/dia<Dialogue_ID>_utt<Utterance_ID><audio_ext>

    (audio extracted from the release's mp4 files; PyAV also reads the .mp4 directly).
    """
    if classes not in (4, 7):
        raise ManifestError(f"MELD has 4 or 7 classes, not {classes}")
    examples = []
    for split, name in MELD_SPLITS.items():
        table = Path(root) / name
        if not table.is_file():
            raise ManifestError(f"{table} is missing (MELD layout)")
        with table.open(newline="", encoding="utf-8", errors="replace") as handle:
            for row in csv.DictReader(handle):
                emotion = row["Emotion"].strip().lower()
                if classes == 4 and emotion not in MELD4:
                    continue
                stem = f"dia{row['Dialogue_ID']}_utt{row['Utterance_ID']}"
                examples.append(
                    Example(
                        audio_uri=str(Path(root) / split / f"{stem}{audio_ext}"),
                        transcript=row["Utterance"].replace("\x92", "'"),
                        label=emotion,
                        speaker=row["Speaker"],
                        split=split,
                    )
                )
    return examples


# -- annotator output --------------------------------------------------------------------------


def from_annotations(
    output: str,
    where: str = "emotion_confidence < 0.5",
    human_labels: Path | Mapping[str, str] | None = None,
    s3=None,
    channel_speakers: Sequence[str] = (),
    test_share: float = 0.0,
) -> Iterator[Example]:
    """Segments of an annotator output as manifest examples, streamed: those matching ``where``
    (SQL over the ``segments`` view), labelled by ``human_labels`` (CSV: segment_id,label, or a
    mapping segment_id → label, e.g. read back from Label Studio) when given, else by the model's
    own emotion. ``test_share``: that share of the calls (chosen by a hash of the call_id, so the
    same call always lands on the same side, both channels of it included) is the ``test`` split,
    the rest ``train``: no recording is in both. Each example is the segment's own channel (a split
    call's channel, as it was served), its speaker named by ``channel_speakers`` as serving names
    it, and the recognised text. A segment of an archive member names its archive
    (``audio_uri``) and the member (``member``): training reads it from the archive. Examples come
    in source order (an archive's members in turn), so training reads each source once
    (:func:`load_audios`).

    Rows come from DuckDB in record batches and human labels are joined inside DuckDB, so neither
    the output nor the labels need to fit in Python."""
    import pyarrow as pa
    import pyarrow.csv as pv

    from annotator.models.prompt import channel_speaker
    from annotator.query import Annotations

    ann = Annotations(output, s3)
    label = "s.emotion"
    join = ""
    if isinstance(human_labels, Mapping):
        table = pa.table(
            {
                "segment_id": pa.array(list(human_labels), pa.string()),
                "label": pa.array(list(human_labels.values()), pa.string()),
            }
        )
        ann.con.register("human_labels", table)
        label, join = "h.label", "JOIN human_labels h USING (segment_id)"
    elif human_labels is not None:
        table = pv.read_csv(
            human_labels,
            convert_options=pv.ConvertOptions(
                include_columns=["segment_id", "label"],
                column_types={"segment_id": pa.string(), "label": pa.string()},
            ),
        )
        ann.con.register("human_labels", table)
        label, join = "h.label", "JOIN human_labels h USING (segment_id)"
    chosen = f"FROM segments s {join} WHERE ({where})"
    relation = ann.sql(
        "SELECT s.call_id, s.source_uri, s.member, s.channel, s.start_s, s.end_s, s.text, "
        f"{label} AS label {chosen} "
        "ORDER BY s.source_uri, s.member, s.channel NULLS FIRST, s.start_s"
    )
    for batch in relation.fetch_arrow_reader(batch_size=10_000):
        for row in batch.to_pylist():
            yield Example(
                audio_uri=row["source_uri"],
                transcript=row["text"],
                label=row["label"],
                speaker=channel_speaker(row["channel"], channel_speakers) or "",
                split="test" if held_out_call(row["call_id"], test_share) else "train",
                start_s=row["start_s"],
                end_s=row["end_s"],
                channel=row["channel"],
                member=row["member"],
            )
    ann.close()


def held_out_call(call_id: str, share: float) -> bool:
    """Whether the call is in the test share: a stable hash of its id, not Python's ``hash``."""
    import hashlib

    if share <= 0:
        return False
    point = int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8], "big") / 2**64
    return point < share
