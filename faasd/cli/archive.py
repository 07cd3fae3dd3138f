"""Pack a function's handler directory into the ``handlerArchive`` of a deployment (a .tar.gz).

Deterministic (sorted entries, zeroed times and owners), so the same directory always gives the same
bytes; only regular files and directories are packed, with their executable bit kept. The daemon
unpacks it into the function's working directory (local backend).
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile

__all__ = ["MAX_ARCHIVE_BYTES", "pack_directory"]

MAX_ARCHIVE_BYTES = 32 * 1024 * 1024
"""Largest packed handler accepted here (the gateway's body limit is larger, with JSON overhead)."""

_SKIP = frozenset({".git", "__pycache__", ".venv", "node_modules", ".pytest_cache"})


def pack_directory(path: str) -> bytes:
    """Return the .tar.gz of directory ``path``.

    Raises:
        ValueError: not a directory, or the archive is larger than :data:`MAX_ARCHIVE_BYTES`.
    """
    if not os.path.isdir(path):
        raise ValueError(f"handler {path} is not a directory")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for root, directories, files in os.walk(path):
            directories[:] = sorted(d for d in directories if d not in _SKIP)
            for name in [*directories, *sorted(files)]:
                full = os.path.join(root, name)
                info = os.lstat(full)
                if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                    continue  # Links, sockets, devices: not part of a function's code.
                relative = os.path.relpath(full, path)
                member = tarfile.TarInfo(relative)
                member.mtime = 0
                member.uid = member.gid = 0
                member.uname = member.gname = ""
                if stat.S_ISDIR(info.st_mode):
                    member.type = tarfile.DIRTYPE
                    member.mode = 0o755
                    tar.addfile(member)
                else:
                    member.size = info.st_size
                    member.mode = 0o755 if info.st_mode & 0o111 else 0o644
                    with open(full, "rb") as file:
                        tar.addfile(member, file)
    packed = gzip.compress(raw.getvalue(), mtime=0)
    if len(packed) > MAX_ARCHIVE_BYTES:
        raise ValueError(f"handler {path} packs to {len(packed)} bytes, over {MAX_ARCHIVE_BYTES}")
    return packed
