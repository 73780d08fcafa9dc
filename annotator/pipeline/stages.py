"""The stages of the annotate graph. Rows travel between them as Arrow tables.

Four kinds of row share one stream (column ``kind``):

* ``window``: consecutive speech segments of one recording, up to 30 s with their gaps (see
  ``annotator/models/asr.py``): ``audio`` holds them end to end, ``spans`` where each one is.
  The ASR stage turns each window into its segment rows.
* ``segment``: one speech segment; the model stages fill in its transcript and emotion.
* ``error``: an input that could not be used; passes through the model stages untouched.
* ``file_done``: the end of one file or archive member (the unit of commit), with how many
  segment and error rows it produced, so the sink knows when it has them all. ``skipped`` files
  (already committed by an earlier run) come through too, for the progress figures.

Model stages are actor classes: the model loads once in ``__init__``; ``__call__`` takes a batch.
HuBERT, the EmoQ-Former and the projector share one actor so HuBERT's frames never leave it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from annotator.audio.ingest import FileDone, IngestError, RecordingDone, Segment, ingest
from annotator.audio.sources import recording_id
from annotator.config import AnnotatorConfig
from annotator.schema import LABEL_PROB, WORD

MIXED = -1  # channel value of a mixed-down recording inside the pipeline (null in the output)

SPAN = pa.struct(
    [
        ("segment_index", pa.int32()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("samples", pa.int64()),
    ]
)
ROW = pa.schema(
    [
        ("kind", pa.string()),
        ("call_id", pa.string()),
        ("recording_id", pa.string()),
        ("source_uri", pa.string()),
        ("member", pa.string()),
        ("channel", pa.int16()),
        ("segment_index", pa.int32()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("audio", pa.binary()),  # float32 16 kHz samples; empty once the features stage ran
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("message", pa.string()),
        ("n_segments", pa.int64()),
        ("n_errors", pa.int64()),
        ("duration_s", pa.float64()),
        ("skipped", pa.bool_()),
        ("spans", pa.list_(SPAN)),  # kind window: its segments, in order; dropped by ASRStage
    ]
)
ASR_COLUMNS = pa.schema(
    [
        ("text", pa.string()),
        ("language", pa.string()),
        ("language_prob", pa.float32()),
        ("avg_logprob", pa.float32()),
        ("no_speech_prob", pa.float32()),
        ("words", pa.list_(WORD)),
    ]
)
LABEL_COLUMNS = pa.schema(
    [
        ("audio_only", pa.bool_()),
        ("emotion", pa.string()),
        ("emotion_probs", pa.list_(LABEL_PROB)),
        ("emotion_confidence", pa.float32()),
    ]
)
ROWS_PER_BLOCK = 4  # decode output (windows of ≤ 30 s) goes on in small blocks: ASR starts early


def _blank() -> dict[str, Any]:
    return {
        "kind": "",
        "call_id": "",
        "recording_id": "",
        "source_uri": "",
        "member": "",
        "channel": MIXED,
        "segment_index": -1,
        "start_s": 0.0,
        "end_s": 0.0,
        "audio": b"",
        "stage": "",
        "error_type": "",
        "message": "",
        "n_segments": 0,
        "n_errors": 0,
        "duration_s": 0.0,
        "skipped": False,
        "spans": [],
    }


def _window_row(segments: list[Segment]) -> dict[str, Any]:
    rec = segments[0].recording
    row = _blank()
    row.update(
        kind="window",
        call_id=rec.call_id,
        recording_id=rec.recording_id,
        source_uri=rec.source_uri,
        member=rec.member,
        channel=MIXED if rec.channel is None else rec.channel,
        segment_index=segments[0].index,
        start_s=segments[0].start_s,
        end_s=segments[-1].end_s,
        audio=b"".join(np.ascontiguousarray(s.audio, dtype=np.float32).tobytes() for s in segments),
        spans=[
            {
                "segment_index": s.index,
                "start_s": s.start_s,
                "end_s": s.end_s,
                "samples": len(s.audio),
            }
            for s in segments
        ],
    )
    return row


def ingest_rows(
    uri: str, config: AnnotatorConfig, done: frozenset[str] = frozenset()
) -> Iterator[dict[str, Any]]:
    """Rows (see the module doc) for one input URI; files whose call_id is in ``done`` skipped.

    A recording's segments are packed, in order, into the ASR windows (``window`` rows): a window
    is closed when the next segment would not fit, and when its recording ends."""
    from annotator.models.asr import WINDOW_SAMPLES, window_samples

    segments: dict[str, int] = {}
    errors: dict[str, int] = {}
    durations: dict[str, float] = {}
    open_windows: dict[str, list[Segment]] = {}  # recording_id → segments not yet handed on
    for item in ingest(uri, config.audio, config.s3, skip=done.__contains__):
        row = _blank()
        if isinstance(item, Segment):
            rec = item.recording
            segments[rec.call_id] = segments.get(rec.call_id, 0) + 1
            window = open_windows.setdefault(rec.recording_id, [])
            lengths = [len(s.audio) for s in window] + [len(item.audio)]
            if window and window_samples(lengths) > WINDOW_SAMPLES:
                yield _window_row(window)
                window.clear()
            window.append(item)
            continue
        elif isinstance(item, IngestError):
            call_id = recording_id(item.source_uri, item.member, None)
            errors[call_id] = errors.get(call_id, 0) + 1
            row.update(
                kind="error",
                call_id=call_id,
                source_uri=item.source_uri,
                member=item.member,
                stage=item.stage,
                error_type=item.error_type,
                message=item.message,
            )
        elif isinstance(item, RecordingDone):
            call_id = item.recording.call_id
            durations[call_id] = max(durations.get(call_id, 0.0), item.duration_s)
            window = open_windows.pop(item.recording.recording_id, [])
            if window:
                yield _window_row(window)
            continue
        elif isinstance(item, FileDone):
            # A file cut short (an error after some segments) may leave windows open.
            for rec_id in [
                r for r, w in open_windows.items() if w[0].recording.call_id == item.call_id
            ]:
                yield _window_row(open_windows.pop(rec_id))
            row.update(
                kind="file_done",
                call_id=item.call_id,
                source_uri=item.source_uri,
                member=item.member,
                n_segments=segments.pop(item.call_id, 0),
                n_errors=errors.pop(item.call_id, 0),
                duration_s=durations.pop(item.call_id, 0.0),
                skipped=item.skipped,
            )
        yield row


def decode(batch: pa.Table, config: AnnotatorConfig, done_ref: Any = None) -> Iterator[pa.Table]:
    """sources → decode → segment, as a Ray Data task over a batch of input URIs.

    ``done_ref``: an object ref of the call_ids already committed (skipped without decoding)."""
    done: frozenset[str] = frozenset()
    if done_ref is not None:
        import ray

        done = ray.get(done_ref)
    rows: list[dict[str, Any]] = []
    for uri in batch["uri"].to_pylist():
        for row in ingest_rows(uri, config, done):
            rows.append(row)
            if len(rows) >= ROWS_PER_BLOCK:
                yield pa.Table.from_pylist(rows, schema=ROW)
                rows = []
    if rows:
        yield pa.Table.from_pylist(rows, schema=ROW)


def _segment_rows(batch: pa.Table) -> list[int]:
    return [i for i, kind in enumerate(batch["kind"].to_pylist()) if kind == "segment"]


def _waveforms(batch: pa.Table, rows: list[int]) -> list[np.ndarray]:
    audio = batch["audio"]
    return [np.frombuffer(audio[i].as_py(), dtype=np.float32) for i in rows]


def _set_threads(num_cpus: float) -> None:
    import torch

    torch.set_num_threads(max(1, int(num_cpus)))


def _model_path(name: str, config: AnnotatorConfig) -> str:
    from annotator.models.profiles import resolve_model

    return resolve_model(name, config.models.home)


class ASRStage:
    """faster-whisper on the window rows: each comes out as its segment rows, with text,
    language, confidences and word timestamps."""

    def __init__(self, config: AnnotatorConfig) -> None:
        from annotator.models.asr import Transcriber

        self.transcriber = Transcriber(
            _model_path(config.models.asr.model, config),
            config.models.asr,
            batch_size=config.stages.asr.batch_size,
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Window rows out as their segment rows, transcribed; other rows pass through."""
        rows = batch.to_pylist()
        windows = [row for row in rows if row["kind"] == "window"]
        clips: list[list[np.ndarray]] = []
        for row in windows:
            audio = np.frombuffer(row["audio"], dtype=np.float32)
            bounds = np.cumsum([0] + [span["samples"] for span in row["spans"]])
            clips.append([audio[a:b] for a, b in itertools.pairwise(bounds)])
        offsets = [[span["start_s"] for span in row["spans"]] for row in windows]
        found = iter(zip(clips, self.transcriber.windows(clips, offsets), strict=True))
        out: list[dict[str, Any]] = []
        for row in rows:
            if row["kind"] != "window":
                out.append({**row, **_NO_TRANSCRIPT, "words": []})
                continue
            window_clips, transcripts = next(found)
            for span, clip, transcript in zip(row["spans"], window_clips, transcripts, strict=True):
                out.append(
                    {
                        **row,
                        "kind": "segment",
                        "segment_index": span["segment_index"],
                        "start_s": span["start_s"],
                        "end_s": span["end_s"],
                        "audio": clip.tobytes(),
                        "spans": [],  # the window's, not carried into the dropped column
                        "text": transcript.text,
                        "language": transcript.language,
                        "language_prob": transcript.language_prob,
                        "avg_logprob": transcript.avg_logprob,
                        "no_speech_prob": transcript.no_speech_prob,
                        "words": [vars(w) for w in transcript.words],
                    }
                )
        return pa.Table.from_pylist(out, schema=_ASR_OUT).drop_columns(["spans"])


_ASR_OUT = pa.unify_schemas([ROW, ASR_COLUMNS])
_NO_TRANSCRIPT = {
    "text": "",
    "language": "",
    "language_prob": None,
    "avg_logprob": None,
    "no_speech_prob": None,
}


class FeaturesStage:
    """HuBERT + EmoQ-Former + projector: audio and transcript → one soft token per segment.

    The audio column leaves the stream here; only the soft token (``soft``) goes on."""

    def __init__(self, config: AnnotatorConfig) -> None:
        from annotator.models.bundle import Bundle
        from annotator.models.embedder import EmotionEmbedder

        _set_threads(config.stages.features.num_cpus)
        device = "cuda" if config.stages.features.num_gpus > 0 else "cpu"
        bundle = Bundle.load(_model_path(config.models.bundle, config))
        self.embedder = EmotionEmbedder(
            bundle,
            _model_path(config.models.hubert, config),
            hubert_layer=config.models.hubert_layer,
            device=device,
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = _segment_rows(batch)
        soft: list[list[float]] = [[] for _ in range(batch.num_rows)]
        if rows:
            texts = batch["text"].to_pylist()
            _, tokens = self.embedder(_waveforms(batch, rows), [texts[i] for i in rows])
            for i, vector in zip(rows, tokens.float().cpu().numpy(), strict=True):
                soft[i] = vector.tolist()
        batch = batch.drop_columns(["audio"])
        return batch.append_column("soft", pa.array(soft, type=pa.list_(pa.float32())))


class LabelStage:
    """The EmoQ prompt with the soft token, served by vLLM with the bundle's LoRA: the emotion."""

    def __init__(self, config: AnnotatorConfig) -> None:
        from transformers import AutoTokenizer

        from annotator.models.bundle import Bundle
        from annotator.models.prompt import PromptEmbedder, local_model_dir

        self.config = config
        self.llm = local_model_dir(_model_path(config.models.llm, config))
        self.bundle = Bundle.load(_model_path(config.models.bundle, config))
        self.bundle.check_llm_tokenizer(AutoTokenizer.from_pretrained(self.llm))
        self.prompts = PromptEmbedder.from_llm(self.llm, self.bundle.labels)
        self.labeler = None  # the engine starts with the first segment: a run of skips needs none

    def _engine(self):
        from annotator.models.labeler.vllm import VLLMLabeler

        if self.labeler is None:
            resources = self.config.stages.label
            self.labeler = VLLMLabeler(
                self.llm,
                self.bundle.emotion_token_ids,
                self.bundle.lora_dir,
                max_lora_rank=self.bundle.lora_rank,
                dtype=self.config.models.dtype,
                gpu_memory_utilization=resources.num_gpus if resources.num_gpus > 0 else 0.3,
            )
        return self.labeler

    def __call__(self, batch: pa.Table) -> pa.Table:
        import torch

        rows = _segment_rows(batch)
        n = batch.num_rows
        values: dict[str, list] = {
            "audio_only": [False] * n,
            "emotion": [""] * n,
            "emotion_probs": [[] for _ in range(n)],
            "emotion_confidence": [None] * n,
        }
        if rows:
            texts = batch["text"].to_pylist()
            soft = batch["soft"]
            embeds = [
                self.prompts.build(
                    texts[i], torch.tensor(soft[i].as_py(), dtype=self.prompts.table.dtype)
                )
                for i in rows
            ]
            probs = self._engine().posteriors(embeds)
            labels = self.bundle.labels
            for i, p in zip(rows, probs, strict=True):
                best = int(np.argmax(p))
                values["audio_only"][i] = not texts[i].strip()
                values["emotion"][i] = labels[best]
                values["emotion_probs"][i] = [
                    {"label": label, "prob": float(q)} for label, q in zip(labels, p, strict=True)
                ]
                values["emotion_confidence"][i] = float(p[best])
        batch = batch.drop_columns(["soft"])
        for field in LABEL_COLUMNS:
            batch = batch.append_column(field, pa.array(values[field.name], type=field.type))
        return batch
