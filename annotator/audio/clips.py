"""Clips cut from where annotate read them: a source file, or a member of a tar/zip archive.

Review export and training read segments back this way. Each source is opened once for all the
clips asked of it. An archive is streamed the way ingest streams it (annotator/audio/sources.py):
the same member-safety checks and size bounds, nothing extracted to disk, and every member asked
for decoded once, in one pass that keeps only the spans' samples. The samples equal those ingest
segmented (the same decode of the same bytes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from annotator.audio.decode import AudioError, cut_spans, decode_spans
from annotator.audio.sources import is_archive, iter_members, recording_name
from annotator.config import AudioConfig, S3Config

Span = tuple[int, int | None]  # (start, end) in samples at 16 kHz; end None: to the end


def source_clips(
    uri: str,
    wanted: Mapping[str, Sequence[Span]],
    audio: AudioConfig | None = None,
    s3: S3Config | None = None,
) -> dict[str, list[np.ndarray]]:
    """The (channels, samples) float32 clips of each member of ``uri`` that ``wanted`` names
    (``""``: the source file itself), one per span, in the order given.

    An archive is read once: its members are listed (the total size bounded before any is
    read), the wanted ones decoded as they come, and reading stops after the last of them. A
    wanted member the archive does not hold, or holds but refuses (unsafe path, a link, over
    ``audio.max_member_bytes``), is an :class:`AudioError` naming it."""
    from annotator.storage import filesystem

    audio = audio or AudioConfig()
    wanted = {member: list(spans) for member, spans in wanted.items() if spans}
    if not wanted:
        return {}
    if not is_archive(uri):
        if set(wanted) != {""}:
            raise AudioError(
                "archive", "not_found", f"{uri} is not an archive; no member {max(wanted)!r}"
            )
        return {"": decode_spans(uri, wanted[""], s3)}
    if "" in wanted:
        raise AudioError("archive", "not_found", f"{uri} is an archive: name a member of it")
    fs, path = filesystem(uri, s3 or S3Config())
    out: dict[str, list[np.ndarray]] = {}
    refused: list[str] = []
    with fs.open(path, "rb") as handle:
        if fs.size(path) == 0:
            raise AudioError("decode", "empty_file", f"{uri}: zero bytes")
        members = iter_members(handle, uri, audio)
        try:
            for member in members:
                if isinstance(member, AudioError):
                    refused.append(member.message)
                    if member.error_type in ("archive_too_large", "unreadable_archive"):
                        raise member
                    continue
                if member.name not in wanted or member.name in out:
                    continue
                name = recording_name(uri, member.name)
                if member.size == 0:
                    raise AudioError("decode", "empty_file", f"{name}: zero bytes")
                out[member.name] = cut_spans(member.file, wanted[member.name], name)
                if len(out) == len(wanted):
                    break
        finally:
            members.close()
    missing = sorted(set(wanted) - set(out))
    if missing:
        why = f" ({'; '.join(refused)})" if refused else ""
        raise AudioError(
            "archive", "not_found", f"{uri} holds no readable member {missing[0]!r}{why}"
        )
    return out
