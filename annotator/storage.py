"""Object storage: local paths and ``s3://`` URIs read and written the same way (fsspec), and
directory trees moved between them.

On a cluster the nodes share nothing but object storage, so everything that crosses from one
process to another (models, bundles, manifests, stage-1 weights, review exports) goes through
here as an ``s3://`` URI. A local path stays a local path: on one machine, or where every pod
mounts it.

A tree uploaded with :func:`upload_tree` carries ``.annotator-files.json`` (every file's SHA-256
and size, written last): its presence says the upload is complete, and a reader can check what
it downloaded against it (:mod:`annotator.models.cache`).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from annotator.config import S3Config

MANIFEST = ".annotator-files.json"
REMOTE_SCHEMES = ("s3://",)


class StorageError(RuntimeError):
    """A location that cannot be read or written; the message names it."""


def is_remote(uri: str | Path) -> bool:
    """Whether ``uri`` names object storage rather than this machine's disk."""
    return str(uri).startswith(REMOTE_SCHEMES)


def storage_options(uri: str, s3: S3Config) -> dict[str, Any]:
    """fsspec (s3fs) options for ``uri``: empty for local paths."""
    if not str(uri).startswith("s3://"):
        return {}
    options: dict[str, Any] = {}
    if s3.endpoint_url:
        options["client_kwargs"] = {"endpoint_url": s3.endpoint_url}
    if s3.region:
        options.setdefault("client_kwargs", {})["region_name"] = s3.region
    if s3.key is not None:
        options["key"], options["secret"] = s3.key, s3.secret
    return options


def filesystem(uri: str, s3: S3Config | None = None):
    """(fsspec filesystem, path within it) for a local path or ``s3://`` URI."""
    from fsspec.core import url_to_fs

    return url_to_fs(str(uri), **storage_options(str(uri), s3 or S3Config()))


def join(uri: str | Path, *parts: str) -> str:
    """``uri`` with ``parts`` appended by ``/`` (a URI) or as path components (a local path)."""
    if is_remote(uri):
        return posixpath.join(str(uri).rstrip("/"), *parts)
    return str(Path(uri).joinpath(*parts))


def read_bytes(uri: str | Path, s3: S3Config | None = None) -> bytes:
    fs, path = filesystem(str(uri), s3)
    try:
        with fs.open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise StorageError(f"{uri}: no such file or object") from None


def read_text(uri: str | Path, s3: S3Config | None = None) -> str:
    return read_bytes(uri, s3).decode("utf-8")


def write_bytes(uri: str | Path, data: bytes, s3: S3Config | None = None) -> None:
    """Write ``data`` to ``uri`` whole: an S3 PUT (atomic), or a local temporary file renamed
    into place (readers never see half a file)."""
    if is_remote(uri):
        fs, path = filesystem(str(uri), s3)
        fs.pipe_file(path, data)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(uri: str | Path, text: str, s3: S3Config | None = None) -> None:
    write_bytes(uri, text.encode("utf-8"), s3)


def exists(uri: str | Path, s3: S3Config | None = None) -> bool:
    """Whether ``uri`` is a file, an object, a directory or a non-empty prefix."""
    fs, path = filesystem(str(uri), s3)
    if is_remote(uri):
        fs.invalidate_cache(path)
        if fs.isfile(path):
            return True
        bucket, key, _ = fs.split_path(path)
        prefix = f"{key.rstrip('/')}/" if key else ""
        try:
            found = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except FileNotFoundError:
            return False
        return bool(found.get("KeyCount"))
    return fs.exists(path)


def _sha256(handle) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def tree_files(root: Path) -> dict[str, dict[str, Any]]:
    """Every file below the local directory ``root`` (not the manifest): relative POSIX path →
    SHA-256 and size."""
    out = {}
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file() and p.name != MANIFEST):
        with path.open("rb") as handle:
            out[path.relative_to(root).as_posix()] = {
                "sha256": _sha256(handle),
                "size": path.stat().st_size,
            }
    return out


def tree_digest(files: dict[str, dict[str, Any]]) -> str:
    """One content hash of a tree's manifest entries: the same files, the same digest."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def upload_tree(local: Path, uri: str, s3: S3Config | None = None) -> dict[str, Any]:
    """Copy the local directory ``local`` to ``uri`` (``s3://`` or another local directory),
    then write the manifest there last; returns the manifest."""
    local = Path(local)
    if not local.is_dir():
        raise StorageError(f"{local} is not a directory")
    files = tree_files(local)
    fs, root = filesystem(uri, s3)
    for name in files:
        target = posixpath.join(root.rstrip("/"), name)
        if not is_remote(uri):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        fs.put_file(str(local / name), target)
    manifest = {
        "files": files,
        "digest": tree_digest(files),
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_text(join(uri, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True), s3)
    return manifest


def read_manifest(uri: str, s3: S3Config | None = None) -> dict[str, Any] | None:
    """The manifest :func:`upload_tree` wrote at ``uri``, or None when there is none."""
    try:
        return json.loads(read_text(join(uri, MANIFEST), s3))
    except StorageError:
        return None


def list_tree(uri: str, s3: S3Config | None = None) -> Iterator[tuple[str, int, str]]:
    """(relative path, size, ETag or "") of every object or file below ``uri``."""
    fs, root = filesystem(uri, s3)
    root = root.rstrip("/")
    if is_remote(uri):
        fs.invalidate_cache(root)
    for path, info in sorted(fs.find(root, detail=True).items()):
        if info.get("type", "file") != "file":
            continue
        rel = posixpath.relpath(path, root)
        yield rel, int(info.get("size") or 0), str(info.get("ETag", "")).strip('"')


def download_tree(uri: str, dest: Path, names: list[str], s3: S3Config | None = None) -> None:
    """Copy ``names`` (relative paths) from ``uri`` into the local directory ``dest``."""
    fs, root = filesystem(uri, s3)
    for name in names:
        target = Path(dest) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(posixpath.join(root.rstrip("/"), name), str(target))


def file_sha256(path: Path) -> str:
    with Path(path).open("rb") as handle:
        return _sha256(handle)
