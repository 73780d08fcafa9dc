"""MiSTER-E's recording-level step: its context model labels each file's segments together.

The kind's actor stage (``UtterancesStage``) gives every segment its speech and text embeddings;
the segments of one file reach the sink in any order, and the sink is the one place that knows
when a file has them all (annotator/pipeline/sink.py). So the sink hands the files of each commit,
before their rows are appended, to a pool of Ray actors that each hold this labeller
(annotator/pipeline/context.py); each file goes to one actor:

* a file's segments are put in time order (start, then channel, then index): the channels of a
  split call are one conversation of two speakers, both in one sequence; no speaker identity is
  used;
* the model reads them in windows of ``models.context_window`` with ``models.context_overlap``
  utterances of context on each side (annotator/kinds/mister_e/windows.py): memory is one
  window's whatever the recording's length, and the cut depends only on the number of segments,
  so the labels do not depend on block order or on how many actors embedded them;
* each segment gets the emotion, its posterior (the bundle's calibration applied) and the gate's
  weights over the experts (``expert_weights``: which expert decided).

Exactly-once holds as for every kind: the labels are computed from the file's complete set of
segments before the commit that writes them; a crash before the ``files`` row redoes the file,
and the rerun computes the same labels.

Why a pool of its own and not an actor stage of the graph: a file's segments are embedded by
many actors, in blocks that arrive in any order; only the sink sees a file complete. Why not on
the driver: there it capped a cluster at one thread's ~320 segments/s. The model is small beside
the encoders (the published sizes: 67 M parameters at 256-wide embeddings; one window of 256
utterances at a time, ~60 MiB over the model for a 4-hour file: benchmarks/context_memory.py).
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from annotator.pipeline.rows import LABEL_COLUMNS
from annotator.schema import EXPERT_WEIGHT

# The columns the kind's actor stage adds and the sink keeps until the context model has read
# them (dropped before the rows are written).
CONTEXT_COLUMNS = ("utterance_speech", "utterance_text")
_ORDER = [
    ("call_id", "ascending"),
    ("start_s", "ascending"),
    ("channel", "ascending"),
    ("segment_index", "ascending"),
]


def _matrix(column: pa.ChunkedArray, n: int) -> np.ndarray:
    values = pc.list_flatten(column.combine_chunks()).to_numpy(zero_copy_only=False)
    return np.array(values, dtype=np.float32).reshape(n, -1)  # a writable copy for torch


class ContextLabeller:
    """A MiSTER-E bundle's context model, labelling whole files' segment rows (``Kind.context``;
    the sink keeps :attr:`columns` on the rows until it has read them)."""

    columns = CONTEXT_COLUMNS

    def __init__(self, bundle, window: int, overlap: int, unsure_below: float) -> None:
        from annotator.kinds.mister_e.model import EXPERTS, MisterE

        self.bundle = bundle
        self.model = MisterE.load(bundle.root)
        self.window, self.overlap = window, overlap
        self.unsure_below = unsure_below
        self.experts = EXPERTS

    def label(self, segments: pa.Table) -> pa.Table:
        """``segments``: every segment row of one or more files, with :data:`CONTEXT_COLUMNS`.
        Returns them in time order per file, labelled, with ``expert_weights``, without the
        embeddings."""
        import torch

        from annotator.kinds.mister_e.windows import run_in_windows
        from annotator.pipeline.stages import with_emotions

        rows = segments.sort_by(_ORDER)
        calls = rows.column("call_id").to_pylist()
        probs, gates = [], []
        start = 0
        for _, group in itertools.groupby(calls):
            n = len(list(group))
            part = rows.slice(start, n)
            start += n
            speech = torch.from_numpy(_matrix(part.column(CONTEXT_COLUMNS[0]), n))
            text = torch.from_numpy(_matrix(part.column(CONTEXT_COLUMNS[1]), n))
            out = run_in_windows(self.model, speech, text, self.window, self.overlap)
            probs.append(torch.softmax(out["logits"].float(), dim=-1).numpy())
            gates.append(out["gate"].float().numpy())
        labelled = rows.drop_columns(
            [
                c
                for c in (*LABEL_COLUMNS.names, *CONTEXT_COLUMNS, "expert_weights")
                if c in rows.column_names
            ]
        )
        texts = labelled.column("text").to_pylist()
        labelled = with_emotions(
            labelled,
            list(range(labelled.num_rows)),
            np.concatenate(probs) if probs else np.zeros((0, len(self.bundle.labels))),
            self.bundle,
            self.unsure_below,
            [not (t or "").strip() for t in texts],
        )
        weights = [
            [{"expert": e, "weight": float(w)} for e, w in zip(self.experts, gate, strict=True)]
            for gate in (np.concatenate(gates) if gates else [])
        ]
        return labelled.append_column(
            "expert_weights", pa.array(weights, type=pa.list_(EXPERT_WEIGHT))
        )
