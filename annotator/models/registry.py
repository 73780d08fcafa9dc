"""The bundle registry: trained bundles in object storage, immutable by version, with named
pointers that serving follows.

Layout under the registry's URI (``models.registry``, e.g. ``s3://bucket/bundles``)::

    versions/<version>/        one bundle, as ``annotator bundles push`` uploaded it; <version> is
                               the bundle's content hash (bundle.json), so a version never changes
    refs/<name>.json           a pointer: {"version", "kind", "promoted_at", "previous"}

A version is complete once its ``.annotator-files.json`` exists (written last by
:func:`annotator.storage.upload_tree`). Pushing a version that is already there does nothing.
A pointer is one object, replaced whole by one PUT (atomic on S3: a reader sees the old pointer or
the new, never half of one). ``models.bundle: registry:current`` resolves the pointer once, when a
run starts; the run then serves that exact version (its immutable URI) on every node, and every
row records it (``bundle_version``), so a promotion during a run changes nothing until the next.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from annotator.config import S3Config
from annotator.kinds import DEFAULT_KIND
from annotator.storage import (
    MANIFEST,
    StorageError,
    exists,
    filesystem,
    is_remote,
    join,
    read_text,
    upload_tree,
    write_text,
)

PREFIX = "registry:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION = re.compile(r"^[0-9a-f]{16}$")


class RegistryError(StorageError):
    """A registry, version or pointer that cannot be used; the message says which."""


@dataclass(frozen=True)
class Version:
    """One pushed bundle: its version, kind, labels and when it was pushed, and the pointers at it."""

    version: str
    kind: str
    labels: list[str]
    pushed_at: str
    refs: list[str]


class Registry:
    def __init__(self, uri: str, s3: S3Config | None = None) -> None:
        if not uri:
            raise RegistryError(
                "no bundle registry: set models.registry (e.g. s3://bucket/bundles) or pass "
                "--registry"
            )
        self.uri = str(uri).rstrip("/") if is_remote(uri) else str(Path(uri).resolve())
        self.s3 = s3 or S3Config()

    def version_uri(self, version: str) -> str:
        return join(self.uri, "versions", version)

    def _ref_uri(self, name: str) -> str:
        return join(self.uri, "refs", f"{name}.json")

    def has(self, version: str) -> bool:
        return bool(_VERSION.match(version)) and exists(
            join(self.version_uri(version), MANIFEST), self.s3
        )

    # -- writing -------------------------------------------------------------------------------

    def push(self, bundle_dir: Path) -> str:
        """Upload a bundle as its version (nothing if that version is there); returns it."""
        from annotator.models.bundle import Bundle

        bundle = Bundle.load(bundle_dir)  # verifies the content hash the version names
        if not self.has(bundle.version):
            upload_tree(bundle.root, self.version_uri(bundle.version), self.s3)
        return bundle.version

    def promote(self, version: str, name: str = "current") -> dict[str, Any]:
        """Point ``name`` at ``version`` (one atomic write); returns the new pointer."""
        if not _NAME.match(name) or _VERSION.match(name):
            raise RegistryError(
                f"pointer name {name!r}: letters, digits, '.', '_' and '-' (not a version)"
            )
        version = self.resolve(version)
        meta = self.meta(version)
        previous = self.pointer(name)
        pointer = {
            "version": version,
            "kind": meta.get("kind", DEFAULT_KIND),
            "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "previous": previous["version"] if previous else None,
        }
        write_text(self._ref_uri(name), json.dumps(pointer, indent=1, sort_keys=True), self.s3)
        return pointer

    # -- reading -------------------------------------------------------------------------------

    def pointer(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(read_text(self._ref_uri(name), self.s3))
        except StorageError:
            return None

    def pointers(self) -> dict[str, dict[str, Any]]:
        fs, root = filesystem(join(self.uri, "refs"), self.s3)
        if is_remote(self.uri):
            fs.invalidate_cache(root)
        try:
            names = [p for p in fs.ls(root, detail=False) if p.endswith(".json")]
        except FileNotFoundError:
            return {}
        out = {}
        for path in sorted(names):
            name = Path(path).name.removesuffix(".json")
            if (found := self.pointer(name)) is not None:
                out[name] = found
        return out

    def resolve(self, ref: str) -> str:
        """The version ``ref`` names: a pointer's (``current``) or a pushed version itself."""
        ref = ref.removeprefix(PREFIX)
        pointer = None if _VERSION.match(ref) else self.pointer(ref)
        version = pointer["version"] if pointer else ref
        if not self.has(version):
            known = ", ".join(sorted(self.pointers())) or "none"
            what = f"pointer {ref!r} names version {version}, which" if pointer else repr(ref)
            raise RegistryError(
                f"{what} is not in the registry {self.uri} (pointers: {known}; "
                "`annotator bundles list` shows the versions)"
            )
        return version

    def location(self, ref: str) -> str:
        """The immutable URI of the version ``ref`` names."""
        return self.version_uri(self.resolve(ref))

    def meta(self, version: str) -> dict[str, Any]:
        from annotator.models.bundle import META

        return json.loads(read_text(join(self.version_uri(version), META), self.s3))

    def versions(self) -> list[Version]:
        """Every pushed version, newest push first, with the pointers naming it."""
        fs, root = filesystem(join(self.uri, "versions"), self.s3)
        if is_remote(self.uri):
            fs.invalidate_cache(root)
        try:
            found = [Path(p).name for p in fs.ls(root, detail=False)]
        except FileNotFoundError:
            found = []
        refs = self.pointers()
        out = []
        for version in found:
            if not self.has(version):
                continue  # a push in progress, or cut short
            manifest = json.loads(read_text(join(self.version_uri(version), MANIFEST), self.s3))
            meta = self.meta(version)
            out.append(
                Version(
                    version,
                    meta.get("kind", DEFAULT_KIND),
                    list(meta.get("labels", [])),
                    manifest.get("written_at", ""),
                    sorted(n for n, p in refs.items() if p["version"] == version),
                )
            )
        return sorted(out, key=lambda v: (v.pushed_at, v.version), reverse=True)
