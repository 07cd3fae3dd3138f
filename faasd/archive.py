"""Safe extraction of a function's handler archive (``faasd deploy --handler DIR``: a .tar.gz).

The archive comes from an API client, so it is treated as hostile. ``tarfile``'s extraction filters
(PEP 706) would do most of this, but Debian 12 ships Python 3.11.2, which predates them; and even
with them, ``extractall`` follows what it created. So members are written one by one, by this
module, under rules that leave nothing to interpretation:

* names are relative, normalised, with no ``..`` component, no NUL, and not under a reserved top-level
  name (the local backend keeps ``.secrets`` there);
* only directories, regular files, symbolic links and hard links are accepted; devices, FIFOs and
  anything else are refused;
* a member is never written *through* a symbolic link: each parent directory is checked with
  ``lstat`` and created by us, and files are created with ``O_EXCL | O_NOFOLLOW``;
* a symbolic link must be relative and stay inside the directory: its ``..`` components may only
  lead the target (``../lib/x``, never ``a/../..``, whose meaning changes when ``a`` is itself a link),
  and they may not climb above the root; a hard link must name a regular file extracted before it;
* modes are sane: ``0644`` for files, ``0755`` for directories and for files with any execute bit;
  set-id and sticky bits and foreign ownership are dropped;
* the total size and the member count are bounded (a gzip bomb fails fast, named defaults below).

Pure blocking file work with no trio: the local backend calls :func:`extract_archive` through
``trio.to_thread.run_sync``; on Swarm the watchdog calls it in the task before it starts
(``handler_archive``, :mod:`faasd.watchdog.main`), and a Marathon command task
(:mod:`faasd.watchdog.marathon`) on its Mesos agent before it becomes the watchdog. Here, outside
``providers/``, because all of them use it and a replica's start must not import the backends (nor trio).
"""

from __future__ import annotations

import io
import os
import posixpath
import stat
import tarfile
import zlib
from collections.abc import Collection
from dataclasses import dataclass

from faasd.errors import InvalidRequest

__all__ = [
    "DEFAULT_MAX_EXTRACTED_BYTES",
    "DEFAULT_MAX_MEMBERS",
    "Extracted",
    "extract_archive",
]

DEFAULT_MAX_EXTRACTED_BYTES = 512 * 1024 * 1024
"""Largest total size of the files in one archive, uncompressed (a handler is code, not data)."""

DEFAULT_MAX_MEMBERS = 20_000
"""Most entries in one archive (bounds memory: ``tarfile`` keeps every header it has read)."""

COPY_CHUNK_BYTES = 1024 * 1024
"""Bytes copied per read while writing one member."""

FILE_MODE = 0o644
EXECUTABLE_MODE = 0o755
DIRECTORY_MODE = 0o755


@dataclass(frozen=True, slots=True)
class Extracted:
    """What :func:`extract_archive` wrote: for a log line."""

    files: int
    directories: int
    links: int
    bytes: int


def extract_archive(
    data: bytes,
    dest: str,
    *,
    reserved: Collection[str] = (),
    max_bytes: int = DEFAULT_MAX_EXTRACTED_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> Extracted:
    """Unpack the tar archive ``data`` (gzip, bzip2, xz or plain) into the existing directory ``dest``.

    Args:
        reserved: top-level names the archive may not contain (the caller writes them itself).
        max_bytes: bound on the total size of regular files.
        max_members: bound on the number of entries.

    Returns:
        Counts of what was written.

    Raises:
        InvalidRequest: the archive is unreadable or breaks a rule of the module docstring; the
            message starts with ``handlerArchive`` and names the member. What was written before the
            bad member stays: extract into a fresh directory and delete it on error.

    Error handling:
        ``OSError`` while writing (disk full, permissions) is not the client's fault and propagates.
    """
    root = os.path.realpath(dest)
    counts = {"files": 0, "directories": 0, "links": 0, "bytes": 0}
    regular_files: set[str] = set()
    with _open(data) as tar:
        members = 0
        while True:
            try:
                member = tar.next()
            except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
                raise InvalidRequest(f"handlerArchive is corrupt: {exc}") from None
            if member is None:
                break
            members += 1
            if members > max_members:
                raise InvalidRequest(f"handlerArchive has more than {max_members} entries")
            name = _member_name(member.name, reserved)
            if name is None:  # the archive's root itself ("." or "./")
                continue
            if member.isdir():
                _ensure_directories(root, name, member.name)
                counts["directories"] += 1
            elif member.isreg():
                if counts["bytes"] + member.size > max_bytes:
                    raise InvalidRequest(f"handlerArchive unpacks to more than {max_bytes} bytes")
                path = _prepare_leaf(root, name, member.name)
                mode = EXECUTABLE_MODE if member.mode & 0o111 else FILE_MODE
                _write_member(tar, member, path, mode)
                regular_files.add(name)
                counts["files"] += 1
                counts["bytes"] += member.size
            elif member.issym():
                _check_symlink_target(name, member.linkname, member.name)
                path = _prepare_leaf(root, name, member.name)
                os.symlink(member.linkname, path)
                regular_files.discard(name)
                counts["links"] += 1
            elif member.islnk():
                try:
                    target = _member_name(member.linkname, reserved)
                except InvalidRequest:
                    target = None
                if target is None or target not in regular_files:
                    raise InvalidRequest(
                        f"handlerArchive: hard link {member.name!r} must point to a regular file earlier in the "
                        f"archive, not {member.linkname!r}"
                    )
                path = _prepare_leaf(root, name, member.name)
                os.link(os.path.join(root, target), path, follow_symlinks=False)
                regular_files.add(name)
                counts["links"] += 1
            else:
                raise InvalidRequest(
                    f"handlerArchive: {member.name!r} is a {_kind(member)}; only files, directories and links are "
                    "allowed"
                )
    return Extracted(**counts)


def _open(data: bytes) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise InvalidRequest(f"handlerArchive is not a readable tar archive: {exc}") from None


def _member_name(raw: str, reserved: Collection[str]) -> str | None:
    """The normalised relative path of a member, None for the root entry.

    Raises:
        InvalidRequest: absolute, escaping, NUL-bearing or reserved names.
    """
    if "\0" in raw:
        raise InvalidRequest(f"handlerArchive: member name {raw!r} contains a NUL byte")
    if raw.startswith("/"):
        raise InvalidRequest(f"handlerArchive: member {raw!r} has an absolute path")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidRequest(f"handlerArchive: member {raw!r} contains '..'")
    if not parts:
        return None
    if parts[0] in reserved:
        raise InvalidRequest(f"handlerArchive: {parts[0]!r} is reserved by faasd and may not be in the archive")
    return "/".join(parts)


def _ensure_directories(root: str, name: str, shown: str) -> str:
    """Create the directories of relative path ``name`` under ``root`` (none may be a link); its path."""
    path = root
    for part in name.split("/"):
        path = os.path.join(path, part)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, DIRECTORY_MODE)
            continue
        if stat.S_ISLNK(info.st_mode):
            raise InvalidRequest(f"handlerArchive: member {shown!r} goes through a symbolic link")
        if not stat.S_ISDIR(info.st_mode):
            raise InvalidRequest(f"handlerArchive: member {shown!r} needs a directory where a file was extracted")
    return path


def _prepare_leaf(root: str, name: str, shown: str) -> str:
    """Create the parents of ``name`` and clear its place (a duplicate member replaces a file or link)."""
    parent, leaf = posixpath.split(name)
    directory = _ensure_directories(root, parent, shown) if parent else root
    path = os.path.join(directory, leaf)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return path
    if stat.S_ISDIR(info.st_mode):
        raise InvalidRequest(f"handlerArchive: member {shown!r} would replace a directory")
    os.unlink(path)  # Never write through what is there: a link made by an earlier member.
    return path


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: str, mode: int) -> None:
    source = tar.extractfile(member)
    if source is None:  # Cannot happen for a regular file; refuse rather than guess.
        raise InvalidRequest(f"handlerArchive: cannot read member {member.name!r}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as target, source:
        try:
            while chunk := source.read(COPY_CHUNK_BYTES):
                target.write(chunk)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise InvalidRequest(f"handlerArchive is corrupt at {member.name!r}: {exc}") from None
    os.chmod(path, mode)  # The umask may have narrowed it.


def _check_symlink_target(name: str, target: str, shown: str) -> None:
    """A link's target must be relative, with ``..`` only leading, and stay under the root."""
    if not target or "\0" in target:
        raise InvalidRequest(f"handlerArchive: symbolic link {shown!r} has an empty or invalid target")
    if target.startswith("/"):
        raise InvalidRequest(f"handlerArchive: symbolic link {shown!r} points to an absolute path {target!r}")
    parts = [part for part in target.split("/") if part not in ("", ".")]
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    if ".." in parts[ups:]:
        raise InvalidRequest(f"handlerArchive: symbolic link {shown!r} has '..' after a name in {target!r}")
    depth = name.count("/")  # Directories between the root and the link.
    if ups > depth:
        raise InvalidRequest(f"handlerArchive: symbolic link {shown!r} points outside the function directory")


def _kind(member: tarfile.TarInfo) -> str:
    if member.ischr():
        return "character device"
    if member.isblk():
        return "block device"
    if member.isfifo():
        return "FIFO"
    return f"special entry (type {member.type!r})"
