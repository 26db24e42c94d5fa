"""Content checksums of checkpoint directories: SHA-256 of every file, written atomically, verified on read.

A checkpoint directory ``<dir>/<step>/`` is complete when Orbax has renamed it
into place; its checksum file ``<dir>/<step>/jaxcnn_checksum.json`` is written
*after* that (to a temporary name, then ``os.replace``), so a checksum file
exists only for a checkpoint whose every byte was on disk when it was hashed.
Any later change -- a flipped bit, a truncated or deleted file, a file added --
makes :func:`verify` report the checkpoint as corrupt, naming the first file
that differs.

The record holds one SHA-256 per file (relative path -> hex digest) and the
file sizes, so the message can say which file changed and how.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CHECKSUM_FILE = "jaxcnn_checksum.json"
_CHUNK = 1 << 20


def _files(directory: Path) -> list[Path]:
    """Every regular file under ``directory`` except the checksum file, in a fixed (sorted) order."""
    out = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            if p.relative_to(directory).as_posix() != CHECKSUM_FILE:
                out.append(p)
    return out


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of one file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def compute(directory: Path) -> dict[str, dict[str, object]]:
    """``{relative path: {"sha256": hex, "size": bytes}}`` for every file of a checkpoint directory."""
    return {
        p.relative_to(directory).as_posix(): {"sha256": file_sha256(p), "size": p.stat().st_size}
        for p in _files(directory)
    }


def write(directory: Path) -> None:
    """Hash ``directory`` and write its checksum file atomically (temporary file, fsync, rename).

    Args:
      directory: a complete checkpoint directory ``<dir>/<step>/``.
    """
    record = {"algorithm": "sha256", "files": compute(directory)}
    target = directory / CHECKSUM_FILE
    tmp = directory / f".{CHECKSUM_FILE}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    try:  # make the rename itself durable
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some file systems cannot fsync a directory; the rename is still atomic
        pass


def verify(directory: Path) -> str | None:
    """Check a checkpoint directory against its checksum file.

    Args:
      directory: ``<dir>/<step>/``.

    Returns:
      ``None`` when every file matches; otherwise one line saying why not
      (no checksum file, an unreadable checksum file, a missing, added, resized
      or changed file).
    """
    path = directory / CHECKSUM_FILE
    if not path.is_file():
        return (
            f"no checksum file {CHECKSUM_FILE} (written by a jaxcnn without checksums, or "
            f"interrupted after the save and before its checksum)"
        )
    try:
        expected = json.loads(path.read_text())["files"]
        if not isinstance(expected, dict):
            raise TypeError("'files' is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable checksum file {CHECKSUM_FILE} ({type(e).__name__}: {e})"
    present = {p.relative_to(directory).as_posix(): p for p in _files(directory)}
    missing, added = sorted(set(expected) - set(present)), sorted(set(present) - set(expected))
    if missing:
        return f"file {missing[0]} is missing"
    if added:
        return f"file {added[0]} was added after the checkpoint was written"
    for rel in sorted(expected):
        want = expected[rel]
        size = present[rel].stat().st_size
        if isinstance(want, dict) and want.get("size") != size:
            return f"file {rel} has {size} bytes, the checksum recorded {want.get('size')}"
        digest = file_sha256(present[rel])
        if not isinstance(want, dict) or want.get("sha256") != digest:
            return f"file {rel} has SHA-256 {digest[:16]}..., the checksum recorded another (its bytes changed)"
    return None
