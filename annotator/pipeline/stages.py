"""The model stages of the annotate graph: actor classes that load their model once in
``__init__`` and take a batch of rows (:mod:`annotator.pipeline.rows`) in ``process``, which
:class:`Stage` guards: a file that fails is quarantined, the batch goes on (pipeline/failures.py).

A kind's stages (annotator/kinds/) are built from the same parts: :class:`Stage`, the row helpers
and :func:`with_emotions`, which every kind's last stage writes its labels through.
"""

from __future__ import annotations

import collections
import itertools
from typing import Any

import numpy as np
import pyarrow as pa

from annotator.config import AnnotatorConfig
from annotator.output import failpoints
from annotator.pipeline.failures import Streak, guarded
from annotator.pipeline.rows import ASR_COLUMNS, LABEL_COLUMNS, ROW
from annotator.schema import UNSURE


def where_am_i() -> str:
    """``<node id>/<actor id>`` of the Ray actor this runs in (``local`` outside Ray)."""
    import ray

    if not ray.is_initialized():
        return "local"
    context = ray.get_runtime_context()
    return f"{context.get_node_id()}/{context.get_actor_id()}"


def placed(batch: pa.Table, stage: str, where: str) -> pa.Table:
    """The batch with column ``<stage>_at`` saying which node and actor ran the stage on it; the
    sink tallies it per stage (``Counts.placement``) and drops it."""
    return batch.append_column(f"{stage}_at", pa.array([where] * batch.num_rows, pa.string()))


def segment_rows(batch: pa.Table) -> list[int]:
    return [i for i, kind in enumerate(batch["kind"].to_pylist()) if kind == "segment"]


def waveforms(batch: pa.Table, rows: list[int]) -> list[np.ndarray]:
    audio = batch["audio"]
    return [np.frombuffer(audio[i].as_py(), dtype=np.float32) for i in rows]


def set_threads(num_cpus: float) -> None:
    import torch

    torch.set_num_threads(max(1, int(num_cpus)))


def model_path(name: str, config: AnnotatorConfig) -> str:
    """The local directory this actor's node loads ``name`` from (fetched into the node's cache
    when it is in object storage: annotator/models/locate.py)."""
    from annotator.models.locate import local_model

    return local_model(name, config)


def served_bundle(config: AnnotatorConfig, stage: str):
    """What a bundle kind's features stage starts with: the actor's threads set from
    ``stages.<stage>``, and (the served bundle, the device its models run on, their dtype)."""
    from annotator.models.bundle import Bundle
    from annotator.models.hubert import features_dtype

    resources = getattr(config.stages, stage)
    set_threads(resources.num_cpus)
    device = "cuda" if resources.num_gpus > 0 else "cpu"
    bundle = Bundle.load(model_path(config.models.bundle, config))
    return bundle, device, features_dtype(config.models.features_dtype, device)


class Stage:
    """A model stage of the graph: Ray Data calls it with a batch; :meth:`process` does the work,
    guarded so one file's failure is that file's alone (annotator/pipeline/failures.py)."""

    stage = ""

    @classmethod
    def calls_at_once(cls, resources: Any) -> int:
        """Batches Ray Data hands one actor at once, each on its own thread, under these
        ``stages.<name>`` resources: more than 1 only for a stage whose process() may run
        concurrently (the label stage's, whose engine thread takes both)."""
        return 1

    def _guard(self, config: AnnotatorConfig) -> None:
        self.streak = Streak(self.stage, config.run.max_failures_in_a_row)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return guarded(self.stage, self.process, batch, self.streak)

    def process(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError


class ASRStage(Stage):
    """faster-whisper on the window rows: each comes out as its segment rows, with text,
    language, confidences and word timestamps."""

    stage = "asr"

    def __init__(self, config: AnnotatorConfig, work_arrived: Any = None) -> None:
        from annotator.models.asr import Transcriber

        self.transcriber = Transcriber(
            model_path(config.models.asr.model, config),
            config.models.asr,
            batch_size=config.stages.asr.batch_size,
        )
        self.where = where_am_i()
        self._guard(config)
        self.work_arrived = work_arrived  # raised with the first window (pipeline/warmup.py)
        # recording_id → (language, probability), detected once from its probe; bounded, as an
        # actor sees an archive's recordings go by.
        self.languages: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()

    def _languages(self, windows: list[dict[str, Any]]) -> list[tuple[str, float]] | None:
        """Each window's language, its recording's; None when the windows carry no probe
        (a language is configured, or the model is English-only)."""
        from annotator.models.asr import probe_audio

        if not any(row["language_probe"] for row in windows):
            return None
        for row in windows:
            rec_id = row["recording_id"]
            if rec_id in self.languages:
                self.languages.move_to_end(rec_id)
                continue
            self.languages[rec_id] = self.transcriber.language_of(
                probe_audio(row["language_probe"])
            )
            if len(self.languages) > 4096:
                self.languages.popitem(last=False)
        return [self.languages[row["recording_id"]] for row in windows]

    def process(self, batch: pa.Table) -> pa.Table:
        """Window rows out as their segment rows, transcribed; other rows pass through."""
        rows = batch.to_pylist()
        windows = [row for row in rows if row["kind"] == "window"]
        if windows:
            failpoints.point("asr")
        if windows and self.work_arrived is not None:
            from annotator.pipeline.warmup import raise_flag

            raise_flag(self.work_arrived)
            self.work_arrived = None
        clips: list[list[np.ndarray]] = []
        for row in windows:
            audio = np.frombuffer(row["audio"], dtype=np.float32)
            bounds = np.cumsum([0] + [span["samples"] for span in row["spans"]])
            clips.append([audio[a:b] for a, b in itertools.pairwise(bounds)])
        offsets = [[span["start_s"] for span in row["spans"]] for row in windows]
        transcripts = self.transcriber.windows(clips, offsets, self._languages(windows))
        found = iter(zip(clips, transcripts, strict=True))
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
                        "language_probe": b"",
                        "text": transcript.text,
                        "language": transcript.language,
                        "language_prob": transcript.language_prob,
                        "avg_logprob": transcript.avg_logprob,
                        "no_speech_prob": transcript.no_speech_prob,
                        "words": [vars(w) for w in transcript.words],
                    }
                )
        table = pa.Table.from_pylist(out, schema=_ASR_OUT).drop_columns(["spans", "language_probe"])
        return placed(table, "asr", self.where)


_ASR_OUT = pa.unify_schemas([ROW, ASR_COLUMNS])
_NO_TRANSCRIPT = {
    "text": "",
    "language": "",
    "language_prob": None,
    "avg_logprob": None,
    "no_speech_prob": None,
}


def vector_column(n: int, rows: list[int], vectors: np.ndarray | None) -> pa.Array:
    """A list<float32> column of ``n`` rows: row ``rows[k]`` holds ``vectors[k]`` flattened,
    the others are empty."""
    values: list[list[float]] = [[] for _ in range(n)]
    if rows:
        for i, vector in zip(rows, np.asarray(vectors, dtype=np.float32), strict=True):
            values[i] = vector.reshape(-1).tolist()
    return pa.array(values, type=pa.list_(pa.float32()))


def with_soft(batch: pa.Table, rows: list[int], tokens) -> pa.Table:
    """``batch`` without its audio and with ``soft``: each segment row's soft token(s) (``tokens``
    (len(rows), …, llm_dim), flattened), empty on other rows."""
    vectors = tokens.float().cpu().numpy() if rows else None
    batch = batch.drop_columns(["audio"])
    return batch.append_column("soft", vector_column(batch.num_rows, rows, vectors))


def with_emotions(
    batch: pa.Table,
    rows: list[int],
    probs: np.ndarray | None,
    bundle: Any,
    unsure_below: float,
    audio_only: list[bool],
) -> pa.Table:
    """``batch`` with the label columns (rows.LABEL_COLUMNS): for each segment row in ``rows`` its
    posterior ``probs`` over ``bundle.labels`` scaled by the bundle's calibration (1: none; the
    chosen label stays the same), the emotion (``unsure`` under ``unsure_below``) and its
    confidence. Every bundle kind's last stage writes its rows through here."""
    from annotator.models.calibration import scaled

    n = batch.num_rows
    values: dict[str, list] = {
        "audio_only": [False] * n,
        "emotion": [""] * n,
        "emotion_probs": [[] for _ in range(n)],
        "emotion_confidence": [None] * n,
    }
    if rows:
        labels = bundle.labels
        for i, p, alone in zip(rows, scaled(probs, bundle.temperature), audio_only, strict=True):
            best = int(np.argmax(p))
            values["audio_only"][i] = alone
            values["emotion"][i] = labels[best] if p[best] >= unsure_below else UNSURE
            values["emotion_probs"][i] = [
                {"label": label, "prob": float(q)} for label, q in zip(labels, p, strict=True)
            ]
            values["emotion_confidence"][i] = float(p[best])
    for field in LABEL_COLUMNS:
        batch = batch.append_column(field, pa.array(values[field.name], type=field.type))
    return batch
