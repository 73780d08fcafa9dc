"""Label sets and the pyarrow schemas of the output tables (segments, errors, runs)."""

from __future__ import annotations

import pyarrow as pa

from annotator.kinds import DEFAULT_KIND

# Each label is also the word the LLM is asked to say after "Emotion:"; its first token must differ
# from every other label's first token (checked when a bundle is built or loaded).
LABEL_SETS: dict[str, tuple[str, ...]] = {
    # IEMOCAP 4-class (happy and excited merged into happy).
    "iemocap4": ("neutral", "angry", "sad", "happy"),
    # MELD's 7 classes and the common 4-class subset.
    "meld7": ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"),
    "meld4": ("neutral", "anger", "sadness", "joy"),
}
DEFAULT_LABEL_SET = "iemocap4"
# The emotion written for a segment whose confidence is under the abstention threshold
# (models.unsure_below, or the bundle's calibration): the posterior is kept beside it.
UNSURE = "unsure"


def label_set(name: str) -> tuple[str, ...]:
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; known: {', '.join(LABEL_SETS)}") from None


# -- output tables -----------------------------------------------------------------------------
# One explicit schema per table (each a Delta table, annotator/output/tables.py). The sink casts
# every batch to it, so every file has the same types and no reader sees a column change type.

WORD = pa.struct(
    [
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("word", pa.string()),
        ("prob", pa.float32()),
    ]
)
LABEL_PROB = pa.struct([("label", pa.string()), ("prob", pa.float32())])
EXPERT_WEIGHT = pa.struct([("expert", pa.string()), ("weight", pa.float32())])
TIMESTAMP = pa.timestamp("us", tz="UTC")

SEGMENTS = pa.schema(
    [
        ("run_id", pa.string()),
        ("recording_id", pa.string()),
        ("call_id", pa.string()),  # shared by the channels of one split call
        ("source_uri", pa.string()),
        ("member", pa.string()),  # archive member, "" for plain files
        ("channel", pa.int16()),  # null when channels were mixed
        ("segment_id", pa.string()),  # {recording_id}-{index:06d}
        ("segment_index", pa.int32()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("text", pa.string()),
        ("language", pa.string()),
        ("language_prob", pa.float32()),
        ("avg_logprob", pa.float32()),
        ("no_speech_prob", pa.float32()),
        ("words", pa.list_(WORD)),
        ("audio_only", pa.bool_()),  # no words recognised: the emotion came from audio alone
        ("emotion", pa.string()),
        ("emotion_probs", pa.list_(LABEL_PROB)),  # every label of the bundle, in its order
        ("emotion_confidence", pa.float32()),  # probability of the chosen emotion
        # A context bundle's gate over its experts (speech, text, cross): which one
        # decided the emotion; null for kinds without experts.
        ("expert_weights", pa.list_(EXPERT_WEIGHT)),
        ("bundle_kind", pa.string()),  # annotator/kinds/__init__.py: which model labelled the row
        ("bundle_version", pa.string()),
        ("asr_model", pa.string()),
        ("llm_model", pa.string()),
        ("processed_at", TIMESTAMP),
        # The commit that wrote the row; shown only while files names it (sql/views.sql).
        ("commit_id", pa.string()),
    ]
)

ERRORS = pa.schema(
    [
        ("run_id", pa.string()),
        ("source_uri", pa.string()),
        ("member", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("message", pa.string()),
        ("at", TIMESTAMP),
        ("call_id", pa.string()),
        ("commit_id", pa.string()),
        # transient (storage throttling, network, credentials: the file is left not done and the
        # next run retries it) or permanent (the file's own fault: quarantined until a run is
        # told --retry-errors). annotator/pipeline/failures.py decides.
        ("error_class", pa.string()),
    ]
)

# The ledger: one row per committed input file (the unit of commit). A file is committed when its
# row is; its segment and error rows carry the same commit_id. When one file has several rows (a
# --force rerun, or two runs that did it at once), the latest committed_at wins. ``status`` is
# ``done``, or ``retry`` for a file a transient error kept from being done: the next run does it.
FILES = pa.schema(
    [
        ("call_id", pa.string()),
        ("source_uri", pa.string()),
        ("member", pa.string()),
        ("recordings", pa.list_(pa.string())),
        ("segments", pa.int64()),
        ("errors", pa.int64()),
        ("duration_s", pa.float64()),
        ("run_id", pa.string()),
        ("commit_id", pa.string()),
        ("committed_at", TIMESTAMP),
        ("status", pa.string()),
    ]
)

RUNS = pa.schema(
    [
        ("run_id", pa.string()),
        ("config_hash", pa.string()),
        ("annotator_version", pa.string()),
        ("bundle_kind", pa.string()),
        ("bundle_version", pa.string()),
        ("asr_model", pa.string()),
        ("llm_model", pa.string()),
        ("started_at", TIMESTAMP),
        ("finished_at", TIMESTAMP),
        ("recordings", pa.int64()),
        ("segments", pa.int64()),
        ("errors", pa.int64()),
        ("audio_hours", pa.float64()),
        ("wall_s", pa.float64()),
        ("rtfx", pa.float64()),
        # finished, failed (the run stopped on an error: reason says which) or stopped (by the
        # user or the stall watchdog); the counts are what it committed before.
        ("status", pa.string()),
        ("reason", pa.string()),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "segments": SEGMENTS,
    "errors": ERRORS,
    "files": FILES,
    "runs": RUNS,
}

# Columns added to a table after outputs were written without them, and what a row written before
# holds: readers (annotator/query/duckdb.py) show this value where a row has none (None: NULL).
# Writers add the column to an existing Delta table on their next commit (schema evolution).
ADDED_COLUMNS: dict[str, dict[str, str | None]] = {
    "segments": {
        "bundle_kind": DEFAULT_KIND,  # every bundle was of the default kind before kinds
        "expert_weights": None,  # no bundle had experts before context kinds
    },
    "runs": {"bundle_kind": DEFAULT_KIND, "status": "finished", "reason": None},
    "errors": {"error_class": "permanent"},  # every error was quarantined for good before
    "files": {"status": "done"},
}
