"""The rows that travel between the stages of the annotate graph, as Arrow tables.

Five kinds of row share one stream (column ``kind``):

* ``member``: an archive member its archive's decode task read and handed on, its bytes in
  ``audio``; decoded into the rows below by a task of its own (pipeline/decode.py,
  ``decode_members``), so no model stage sees one.
* ``window``: consecutive speech segments of one recording, up to 30 s with their gaps (see
  ``annotator/pipeline/windows.py``): ``audio`` holds them end to end, ``spans`` where each one
  is. The ASR stage turns each window into its segment rows.
* ``segment``: one speech segment; the model stages fill in its transcript and emotion.
* ``error``: an input that could not be used; passes through the model stages untouched. An
  error row a model stage put in place of a file's work (``replaces`` > 0: that many segments,
  annotator/pipeline/failures.py) quarantines the file: the sink commits it without segments.
* ``file_done``: the end of one file or archive member (the unit of commit), with how many
  segment and error rows it produced, so the sink knows when it has them all. A ``file_done``
  row with ``skipped`` > 0 stands for that many files an earlier run committed (counted for the
  progress figures, nothing to commit).

``channel`` is null for a recording mixed down to mono, as in the output.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from annotator.schema import LABEL_PROB, WORD

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
        ("error_class", pa.string()),  # kind error: transient or permanent (failures.py)
        ("replaces", pa.int64()),  # kind error from a model stage: the segments it stands for
        ("n_segments", pa.int64()),
        ("n_errors", pa.int64()),
        ("duration_s", pa.float64()),
        ("skipped", pa.int64()),
        ("spans", pa.list_(SPAN)),  # kind window: its segments, in order; dropped by ASRStage
        # kind window, multilingual ASR with no language set: the recording's first seconds of
        # speech as int16, which its language is detected from (models/asr.py); dropped by ASRStage
        ("language_probe", pa.binary()),
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


def blank_row() -> dict[str, Any]:
    return {
        "kind": "",
        "call_id": "",
        "recording_id": "",
        "source_uri": "",
        "member": "",
        "channel": None,
        "segment_index": -1,
        "start_s": 0.0,
        "end_s": 0.0,
        "audio": b"",
        "stage": "",
        "error_type": "",
        "message": "",
        "error_class": "",
        "replaces": 0,
        "n_segments": 0,
        "n_errors": 0,
        "duration_s": 0.0,
        "skipped": 0,
        "spans": [],
        "language_probe": b"",
    }
