"""The run's inputs as a stream: listed inside Ray tasks, never as a list on the driver.

:class:`SourceListing` is a Ray Data datasource with one read task per URI the user gave (a file,
directory, glob, archive or ``s3://`` prefix). Each task lists its URI lazily
(:func:`annotator.audio.sources.iter_sources`, page by page on S3) and hands the files on as they
come. The graph splits the listing into one row per block, so each file still to do becomes a
decode task of its own; files an earlier run committed are not handed on one by one but counted,
one row per 1,000 (``skipped``), so a rerun over a million committed files costs a thousand
cheap rows.

:class:`DoneSet` holds what was committed: call_ids (16 hex digits) as one sorted ``uint64``
array. Put into the object store once, every task reads it zero-copy and looks up with a binary
search, instead of unpickling a Python set of every id.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from annotator.audio.sources import is_archive, iter_sources, recording_id
from annotator.config import AudioConfig, S3Config

# A file to do (``skipped`` 0), or ``skipped`` files an earlier run committed (``uri`` empty).
INPUT = pa.schema([("uri", pa.string()), ("skipped", pa.int64())])
ROWS_PER_BLOCK = 100  # listing output; split into one row per block before decode
SKIPPED_PER_ROW = 1000


class DoneSet:
    """The call_ids already committed to an output."""

    def __init__(self, call_ids: Iterable[str] = ()) -> None:
        ids = np.fromiter((int(c, 16) for c in call_ids), dtype=np.uint64)
        self.ids = np.unique(ids)  # sorted

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, call_id: str) -> bool:
        key = np.uint64(int(call_id, 16))
        at = int(np.searchsorted(self.ids, key))
        return at < len(self.ids) and self.ids[at] == key


def resolve_done(done: Any) -> DoneSet:
    """A DoneSet, or an object ref of one (read zero-copy from the object store)."""
    if done is None:
        return DoneSet()
    if isinstance(done, DoneSet):
        return done
    import ray

    return ray.get(done)


def claims_actor():
    """An actor that hands each file to one listing only, for a run whose inputs overlap (one
    object named by two URIs, a ``**`` glob and a prefix over it): the listings ask it before
    handing files on. It keeps a 64-bit id per file (call_id), on the driver's node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0, max_restarts=-1)
    class Claims:
        def __init__(self) -> None:
            self.seen: set[int] = set()

        def claim(self, uris: list[str]) -> list[str]:
            new = []
            for uri in uris:
                key = int(recording_id(uri, "", None), 16)
                if key not in self.seen:
                    self.seen.add(key)
                    new.append(uri)
            return new

    here = ray.get_runtime_context().get_node_id()
    return Claims.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True)
    ).remote()


def listing_blocks(
    uri: str, audio: AudioConfig, s3: S3Config, done: DoneSet, claims: Any = None
) -> Iterator[pa.Table]:
    """The files one input URI names, as :data:`INPUT` rows (see the module doc); with
    ``claims`` (:func:`claims_actor`), only those no other listing of the run handed on.

    Archives always go on to be opened: which of their members are done is known only inside."""
    todo: list[str] = []
    skipped = 0

    def block() -> pa.Table:
        if claims is not None and todo:
            import ray

            return _block(ray.get(claims.claim.remote(todo)), skipped)
        return _block(todo, skipped)

    for source in iter_sources([uri], audio, s3):
        if not is_archive(source) and recording_id(source, "", None) in done:
            skipped += 1
        else:
            todo.append(source)
        if len(todo) >= ROWS_PER_BLOCK or skipped >= SKIPPED_PER_ROW:
            yield block()
            todo, skipped = [], 0
    if todo or skipped:
        yield block()


def _block(todo: list[str], skipped: int) -> pa.Table:
    rows = [{"uri": uri, "skipped": 0} for uri in todo]
    if skipped:
        rows.append({"uri": "", "skipped": skipped})
    return pa.Table.from_pylist(rows, schema=INPUT)


def source_listing(inputs: list[str], audio: AudioConfig, s3: S3Config, done_ref: Any = None):
    """A Ray Data datasource over ``inputs``: one listing task per URI the user gave; each file
    handed on once when they are several (:func:`claims_actor`)."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class SourceListing(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, **_: Any) -> list[ReadTask]:
            def read(uri: str):
                return lambda: listing_blocks(uri, audio, s3, resolve_done(done_ref), owner)

            meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
            return [ReadTask(read(uri), meta, schema=INPUT) for uri in inputs]

        def get_name(self) -> str:
            return "ListSources"

    owner = claims_actor() if len(inputs) > 1 else None
    return SourceListing()
