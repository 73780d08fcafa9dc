"""Sources: the URIs a run is given, expanded lazily into audio files and archives.

A URI may be a local file, a directory (recursive, by extension), a glob, an ``s3://`` object,
prefix or glob; ``.tar``, ``.tar.gz``/``.tgz`` and ``.zip`` archives are opened where they are
processed, not on the driver, so listing stays a stream of names even for millions of files.
"""

from __future__ import annotations

import hashlib
import itertools
import posixpath
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from annotator.audio.decode import AudioError
from annotator.config import AudioConfig, S3Config
from annotator.storage import filesystem

ARCHIVE_ENDINGS = (".tar", ".tar.gz", ".tgz", ".zip")
GLOB_CHARS = set("*?[")


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_ENDINGS)


def is_audio(name: str, audio: AudioConfig) -> bool:
    return name.lower().endswith(tuple(e.lower() for e in audio.extensions))


def recording_id(source_uri: str, member: str = "", channel: int | None = None) -> str:
    """Stable id of one recording: the same URI, member and channel give the same id everywhere."""
    key = f"{source_uri}\0{member}\0{'mix' if channel is None else channel}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def recording_name(source_uri: str, member: str = "") -> str:
    """How messages name a file or an archive's member: ``source_uri`` or ``source_uri!member``."""
    return f"{source_uri}!{member}" if member else source_uri


def _full_uri(fs, path: str) -> str:
    """The one name of the object at ``path``: its URI (``s3://bucket/key``), or for a local file
    the normalised absolute path (``a/./b`` and ``a//b`` are ``a/b``): a file named two ways in
    one run is one file (pipeline/inputs.py)."""
    if fs.protocol not in ("file", ("file", "local")):
        return fs.unstrip_protocol(path)
    return posixpath.normpath(path)


def iter_sources(uris: Iterable[str], audio: AudioConfig, s3: S3Config) -> Iterator[str]:
    """Yield the URI of every audio file and archive the inputs name, lazily and in a stable order.

    A name that matches nothing is yielded as it is: opening it later reports ``not_found`` in the
    errors table instead of silently dropping an input.
    """
    for uri in uris:
        fs, path = filesystem(uri, s3)
        if GLOB_CHARS & set(path):
            matches = fs.glob(path)
            for match in sorted(matches):
                if fs.isdir(match):
                    yield from _walk(fs, match, audio)
                elif is_audio(match, audio) or is_archive(match):
                    yield _full_uri(fs, match)
            if not matches:
                yield uri
        elif _is_s3(fs) and not fs.isfile(path):
            # Not isdir: s3fs's isdir lists the whole prefix. Nothing under it: not found.
            keys = _s3_keys(fs, path)
            first = next(keys, None)
            if first is None:
                yield uri
            else:
                yield from _audio_uris(fs, itertools.chain([first], keys), audio)
        elif fs.isdir(path):
            yield from _walk(fs, path, audio)
        else:
            yield _full_uri(fs, path) if fs.exists(path) else uri


def _is_s3(fs) -> bool:
    return "s3" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def _walk(fs, root: str, audio: AudioConfig) -> Iterator[str]:
    yield from _audio_uris(fs, _s3_keys(fs, root) if _is_s3(fs) else _local_files(fs, root), audio)


def _audio_uris(fs, paths: Iterable[str], audio: AudioConfig) -> Iterator[str]:
    for path in paths:
        if is_audio(path, audio) or is_archive(path):
            yield _full_uri(fs, path)


def _local_files(fs, root: str) -> Iterator[str]:
    # fs.walk yields one directory at a time: memory follows the widest directory, not the tree.
    for directory, dirs, files in fs.walk(root):
        dirs.sort()
        for name in sorted(files):
            yield posixpath.join(directory, name)


S3_PAGE = 1000  # keys per ListObjectsV2 page


def _s3_keys(fs, root: str) -> Iterator[str]:
    """Every key under ``root`` in S3's (lexicographic) order, one listing page in memory at a
    time: s3fs's own walk and find gather a whole prefix, and cache it, before returning."""
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(root)
    prefix = f"{key.rstrip('/')}/" if key else ""
    pages = fs._iterdir(bucket, delimiter="", prefix=prefix)

    async def page() -> list[str]:
        names: list[str] = []
        async for info in pages:
            names.append(info["name"])
            if len(names) >= S3_PAGE:
                break
        return names

    while names := sync(fs.loop, page):
        yield from names


@dataclass
class Member:
    """One audio member of an archive, readable as a file object while the archive is open."""

    name: str
    size: int
    file: IO[bytes]


def _safe_name(name: str) -> bool:
    norm = posixpath.normpath(name.replace("\\", "/"))
    return not (
        norm.startswith("/") or norm == ".." or norm.startswith("../") or ":" in norm.split("/")[0]
    )


def iter_members(
    handle: IO[bytes], archive_name: str, audio: AudioConfig
) -> Iterator[Member | AudioError]:
    """Audio members of a tar/zip archive; unsafe or oversized members come out as errors.

    The archive's total decompressed size is checked against ``max_archive_bytes`` before any
    member is handed out, so an over-large archive is refused whole (one error), not half-done.
    Nothing is ever extracted to disk: members are streamed to the decoder.
    """
    lower = archive_name.lower()
    try:
        if lower.endswith(".zip"):
            yield from _zip_members(handle, audio)
        else:
            yield from _tar_members(handle, audio)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        yield AudioError("archive", "unreadable_archive", f"{archive_name}: {exc}")


def _check_total(total: int, audio: AudioConfig) -> AudioError | None:
    if total > audio.max_archive_bytes:
        return AudioError(
            "archive",
            "archive_too_large",
            f"members decompress to more than {audio.max_archive_bytes:,} bytes (max_archive_bytes)",
        )
    return None


def _member_error(name: str, size: int, regular: bool, audio: AudioConfig) -> AudioError | None:
    if not _safe_name(name):
        return AudioError(
            "archive", "unsafe_member", f"member path {name!r} escapes the archive root"
        )
    if not regular:
        return AudioError(
            "archive", "unsafe_member", f"member {name!r} is a link or device, not a file"
        )
    if size > audio.max_member_bytes:
        return AudioError(
            "archive", "member_too_large", f"member {name!r} is {size:,} bytes (max_member_bytes)"
        )
    return None


def _tar_members(handle: IO[bytes], audio: AudioConfig) -> Iterator[Member | AudioError]:
    with tarfile.open(fileobj=handle, mode="r:*") as tar:
        total = 0
        for info in tar:  # headers only: a first pass bounds the total before any work starts
            total += info.size if info.isfile() else 0
            if error := _check_total(total, audio):
                yield error
                return
        for info in tar.getmembers():
            if info.isdir() or not (is_audio(info.name, audio) or not _safe_name(info.name)):
                continue
            if error := _member_error(info.name, info.size, info.isfile(), audio):
                yield error
                continue
            yield Member(info.name, info.size, tar.extractfile(info))


def _zip_members(handle: IO[bytes], audio: AudioConfig) -> Iterator[Member | AudioError]:
    with zipfile.ZipFile(handle) as archive:
        infos = archive.infolist()
        # zipfile never reads more than a member's declared size, so declared sizes bound the total.
        if error := _check_total(sum(i.file_size for i in infos), audio):
            yield error
            return
        for info in infos:
            if info.is_dir() or not (
                is_audio(info.filename, audio) or not _safe_name(info.filename)
            ):
                continue
            mode = (info.external_attr >> 16) & 0o170000
            regular = mode in (0, 0o100000)  # 0: written by tools that store no Unix mode
            if error := _member_error(info.filename, info.file_size, regular, audio):
                yield error
                continue
            with archive.open(info) as member:
                yield Member(info.filename, info.file_size, member)
