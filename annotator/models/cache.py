"""A node's own cache of models and bundles from object storage.

A model or bundle named by an ``s3://`` URI is fetched once per node into a directory of this
node's disk and shared by every process on the node that needs it (each Ray actor of a stage,
each Ray Train worker): the first one downloads while the others wait on a file lock, then all
open the same files. A fetched tree is checked before anyone sees it:

* a tree written by ``annotator models push`` or ``annotator bundles push`` carries a manifest
  (``.annotator-files.json``, :mod:`annotator.storage`) with every file's SHA-256, and each
  downloaded file must match it; its cache directory is named by the manifest's digest, so new
  content at the same URI is a new directory, never a mix;
* a tree uploaded by other means (``aws s3 sync`` of a hub snapshot) has no manifest: its
  directory is named by the listing's (key, size, ETag) and the sizes are checked.

The download goes to a staging directory renamed into place once complete and checked: a
killed download leaves no directory that looks complete. Where the cache is: ``models.cache_dir``
in the config, else ``ANNOTATOR_CACHE_DIR``, else ``<ANNOTATOR_HOME>/objects`` — all read on the
node that fetches, never the driver's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from annotator.config import S3Config, default_home
from annotator.storage import (
    MANIFEST,
    StorageError,
    download_tree,
    file_sha256,
    list_tree,
    read_manifest,
)

log = logging.getLogger("annotator.models")
CACHE_ENV = "ANNOTATOR_CACHE_DIR"


class CacheError(StorageError):
    """What was fetched does not match what object storage says it should be."""


def cache_root(configured: str | Path | None = None) -> Path:
    """This node's cache directory (see the module doc)."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return default_home() / "objects"


@contextlib.contextmanager
def _locked(path: Path):
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch(uri: str, s3: S3Config | None = None, root: str | Path | None = None) -> Path:
    """The local directory holding the tree at ``uri`` on this node, downloaded if this node
    has not got it yet. Raises :class:`StorageError` if nothing is there, :class:`CacheError`
    if what arrived does not match its manifest or listing."""
    listing = [entry for entry in list_tree(uri, s3) if entry[0] != MANIFEST]
    if not listing:
        raise StorageError(f"{uri}: no such model or bundle (nothing under that prefix)")
    manifest = read_manifest(uri, s3)
    if manifest is not None:
        expected = manifest["files"]
        content = manifest["digest"]
        sizes = {name: entry["size"] for name, entry in expected.items()}
    else:
        sizes = {name: size for name, size, _ in listing}
        content = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
        expected = None
    base = cache_root(root)
    base.mkdir(parents=True, exist_ok=True)
    where = base / f"{hashlib.sha256(uri.encode()).hexdigest()[:12]}-{content[:16]}"
    if where.is_dir():
        return where
    with _locked(base / f"{where.name}.lock"):
        if where.is_dir():  # another process of this node fetched it while this one waited
            return where
        staging = Path(tempfile.mkdtemp(prefix=f".{where.name}.", dir=base))
        try:
            log.info("fetching %s into this node's cache (%s)", uri, where)
            download_tree(uri, staging, sorted(sizes), s3)
            _check(uri, staging, sizes, expected)
            staging.rename(where)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if expected is None:
        log.warning("%s has no %s: checked by size only (push it with annotator)", uri, MANIFEST)
    return where


def _check(uri: str, local: Path, sizes: dict[str, int], expected: dict | None) -> None:
    for name, size in sizes.items():
        path = local / name
        if not path.is_file() or path.stat().st_size != size:
            raise CacheError(
                f"{uri}/{name}: fetched {path.stat().st_size if path.is_file() else 0} bytes, expected {size}"
            )
        if expected is not None and file_sha256(path) != expected[name]["sha256"]:
            raise CacheError(f"{uri}/{name}: content does not match its SHA-256 in {MANIFEST}")
