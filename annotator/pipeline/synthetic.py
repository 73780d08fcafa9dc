"""Rows as the sink receives them from the label stage, made up: no audio, no models.

For the sink and query benchmarks and the exactly-once tests, which need many input files'
worth of rows quickly. Every file's rows depend only on its index (and the seed), so two writers
given overlapping ranges produce the same rows for the same file, as two real runs would.

Run as a module to write such rows into an output through the real sink (what the tests kill)::

    python -m annotator.pipeline.synthetic OUT --files 2000 --first 0 --every-s 0 --max-files 100
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator

import pyarrow as pa

from annotator.audio.sources import recording_id
from annotator.pipeline.rows import ASR_COLUMNS, LABEL_COLUMNS, ROW, blank_row
from annotator.schema import label_set

LABELS = label_set("iemocap4")
WORDS = ("the", "call", "was", "about", "my", "bill", "and", "it", "is", "late", "again")
STREAM = pa.schema(
    list(ROW)
    + list(ASR_COLUMNS)
    + list(LABEL_COLUMNS)
    + [pa.field(f"{stage}_at", pa.string()) for stage in ("asr", "features", "label")]
)


def source_uri(index: int) -> str:
    return f"s3://archive/calls/{index // 1000:04d}/call-{index:07d}.wav"


def file_rows(index: int, segments: int, seed: int = 0, errors: bool = False) -> list[dict]:
    """The segment (or error) rows and the file_done row of input file ``index``."""
    rng = random.Random(f"{seed}/{index}")
    uri = source_uri(index)
    call_id = recording_id(uri)
    split = index % 4 == 0  # every fourth file a call split into its two channels
    rows = []
    if errors:
        row = blank_row() | dict(
            kind="error",
            call_id=call_id,
            recording_id=call_id,
            source_uri=uri,
            stage="decode",
            error_type="corrupt",
            message=f"{uri}: not an audio file",
        )
        rows.append(row)
    else:
        t = 0.0
        for i in range(segments):
            channel = i % 2 if split else None
            start, t = t, t + rng.uniform(1.0, 8.0)
            probs = [rng.random() for _ in LABELS]
            total = sum(probs)
            probs = [p / total for p in probs]
            best = max(range(len(LABELS)), key=probs.__getitem__)
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
            rows.append(
                blank_row()
                | dict(
                    kind="segment",
                    call_id=call_id,
                    recording_id=recording_id(uri, "", channel),
                    source_uri=uri,
                    channel=channel,
                    segment_index=i // 2 if split else i,
                    start_s=start,
                    end_s=t,
                    text=text,
                    language="en",
                    language_prob=1.0,
                    avg_logprob=-0.2,
                    no_speech_prob=0.01,
                    words=[
                        {"start": start, "end": t, "word": w, "prob": 0.9} for w in text.split()
                    ],
                    audio_only=False,
                    emotion=LABELS[best],
                    emotion_probs=[
                        {"label": label, "prob": p} for label, p in zip(LABELS, probs, strict=True)
                    ],
                    emotion_confidence=probs[best],
                    asr_at="node0/asr0",
                    features_at="node0/features0",
                    label_at="node0/label0",
                )
            )
    done = blank_row() | dict(
        kind="file_done",
        call_id=call_id,
        source_uri=uri,
        n_segments=0 if errors else segments,
        n_errors=1 if errors else 0,
        duration_s=rows[-1]["end_s"] if rows and not errors else 0.0,
    )
    return [*rows, done]


def batches(
    first: int,
    count: int,
    segments: int = 60,
    seed: int = 0,
    error_every: int = 0,
    batch_rows: int = 2048,
) -> Iterator[pa.Table]:
    """Files ``first … first+count-1`` as stream batches of about ``batch_rows`` rows. Rows of
    neighbouring files are interleaved, as actor pools reorder them."""
    pending: list[dict] = []
    for index in range(first, first + count):
        pending += file_rows(index, segments, seed, bool(error_every) and index % error_every == 0)
        if len(pending) >= batch_rows:
            random.Random(index).shuffle(pending)
            yield pa.Table.from_pylist(pending, schema=STREAM)
            pending = []
    if pending:
        yield pa.Table.from_pylist(pending, schema=STREAM)


def main(argv: list[str] | None = None) -> None:
    from annotator.config import CommitConfig, S3Config
    from annotator.output.tables import OutputTables
    from annotator.pipeline.runs import new_run_id
    from annotator.pipeline.sink import RunInfo, Sink

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--files", type=int, required=True)
    parser.add_argument("--segments", type=int, default=60)
    parser.add_argument("--error-every", type=int, default=0)
    parser.add_argument("--batch-rows", type=int, default=2048, help="rows per stream batch")
    parser.add_argument("--every-s", type=float, default=30.0)
    parser.add_argument("--max-files", type=int, default=2000)
    parser.add_argument("--skip-committed", action="store_true", help="as a rerun does")
    parser.add_argument("--endpoint-url")
    args = parser.parse_args(argv)
    from datetime import UTC, datetime

    s3 = S3Config(endpoint_url=args.endpoint_url, key="testing", secret="testing")
    tables = OutputTables(args.output, s3 if args.output.startswith("s3://") else None)
    done = set(tables.committed_ids()) if args.skip_committed else set()
    info = RunInfo(new_run_id(datetime.now(UTC)), "synthetic", "synthetic-asr", "synthetic-llm")
    sink = Sink(tables, info, CommitConfig(every_s=args.every_s, max_files=args.max_files))
    stream = batches(
        args.first,
        args.files,
        args.segments,
        error_every=args.error_every,
        batch_rows=args.batch_rows,
    )
    for batch in stream:
        if done:
            keep = [c not in done for c in batch.column("call_id").to_pylist()]
            batch = batch.filter(pa.array(keep))
        sink.add(batch)
    sink.close()
    print(f"committed {sink.counts.files} files in {sink.counts.commits} commits")


if __name__ == "__main__":
    main()
