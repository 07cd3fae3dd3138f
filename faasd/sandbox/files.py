"""File ownership for sandboxed functions (blocking: the backend calls these through ``trio.to_thread``).

When functions have uids of their own, a function's directory is ``root:<its gid>``: directories
0750, files 0440 (0550 when executable), so it can read and run its code and read its secrets but
write none of it, and no other function (another gid) can read any of it.

``uid`` mode has no mount namespace to show a function its directory, and a function uid cannot pass
through the state dir (0700, often under ``/root``). Programs need absolute paths to their own files
(``python3 handler.py`` opens ``$PWD/handler.py``), so in that mode the functions' directories live in a
*work root* outside the state dir: ``<temp dir>/faasd-<daemon uid>-<state dir hash>``, 0711 (any uid
may pass, none may list), holding ``functions/`` and ``staging/`` (0711) and ``replicas/`` (0711) with
each replica's private scratch directory (its ``TMPDIR`` and ``HOME``), 0700 and owned by its uid. It
is rebuilt at every start from the store, like the working dirs themselves.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile

__all__ = [
    "WORK_DIRS",
    "lend",
    "make_scratch",
    "prepare_work_root",
    "reachable_by_others",
    "reclaim",
    "share_with_group",
    "work_root_for",
]


def share_with_group(root: str, gid: int) -> None:
    """Make ``root`` (recursively) ``owner:gid``, group read (and execute where the owner has it), no
    group write, nothing for others. Symbolic links are re-owned, not followed."""
    for directory, dirs, files in os.walk(root):
        _share(directory, gid)
        for name in dirs + files:
            _share(os.path.join(directory, name), gid)


def _share(path: str, gid: int) -> None:
    info = os.lstat(path)
    os.lchown(path, -1, gid)
    if stat.S_ISLNK(info.st_mode):
        return
    owner = stat.S_IMODE(info.st_mode) & 0o700
    os.chmod(path, owner | ((owner & 0o500) >> 3))


def lend(path: str, uid: int) -> None:
    """Let ``uid`` write in directory ``path`` (a build step), for now: ``<daemon uid>:<uid's gid>`` 0770 (the
    daemon stays its owner: bwrap enters it after dropping the capability to bypass permissions)."""
    os.chown(path, os.geteuid(), uid)
    os.chmod(path, 0o770)


def reclaim(path: str, uid: int) -> None:
    """Take back a directory lent to ``uid``: it, and everything in it that ``uid`` owns, becomes
    ``<daemon uid>:<uid's gid>`` with group read (and execute where the owner has it).

    Everything goes through file descriptors opened relative to their directory without following links,
    so a process of ``uid`` still running cannot swap a file for a link to somewhere else in between.
    Entries ``uid`` does not own are left as they are (ours from before, or a hard link to a file it
    could not read); entries that are neither files, directories nor links are removed.
    """
    owner = os.geteuid()
    top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchown(top, owner, uid)  # First: from here on it cannot create or rename anything at the top.
        os.fchmod(top, 0o750)
    finally:
        os.close(top)
    for _, dirs, files, dir_fd in os.fwalk(path, follow_symlinks=False):
        for name in dirs + files:  # A directory is taken back before fwalk enters it.
            _reclaim_entry(name, dir_fd, uid, owner)


def _reclaim_entry(name: str, dir_fd: int, uid: int, owner: int) -> None:
    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if info.st_uid != uid:
        return
    if stat.S_ISLNK(info.st_mode):
        os.chown(name, owner, uid, dir_fd=dir_fd, follow_symlinks=False)
        return
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        os.unlink(name, dir_fd=dir_fd)
        return
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if info.st_uid != uid:
            return
        os.fchown(fd, owner, uid)
        mode = stat.S_IMODE(info.st_mode) & 0o700
        os.fchmod(fd, mode | ((mode & 0o500) >> 3))
    finally:
        os.close(fd)


def reachable_by_others(path: str) -> str | None:
    """None when a user that is neither owner nor group member can read ``path`` (a file, or a directory
    it can list) and search every directory above it; else the first path that stops it and why."""
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    for index in range(1, len(parts)):
        directory = os.sep + os.path.join(*parts[1:index]) if index > 1 else os.sep
        try:
            mode = os.stat(directory).st_mode
        except OSError as exc:
            return f"{directory}: {exc.strerror}"
        if not mode & stat.S_IXOTH:
            return f"{directory} is mode {stat.S_IMODE(mode):04o}: other users cannot enter it"
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        return f"{real}: {exc.strerror}"
    needed = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
    if mode & needed != needed:
        return f"{real} is mode {stat.S_IMODE(mode):04o}: other users cannot read it"
    return None


WORK_DIRS = ("functions", "staging", "replicas")


def work_root_for(state_dir: str) -> str:
    """``<temp dir>/faasd-<daemon uid>-<state dir hash>``: one per daemon, stable across its restarts."""
    digest = hashlib.sha256(os.path.abspath(state_dir).encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"faasd-{os.geteuid()}-{digest}")


def prepare_work_root(path: str) -> None:
    """Create ``path`` (0711, ours) with :data:`WORK_DIRS` in it, or take over the one an earlier run
    left, emptied.

    Raises:
        OSError: it exists and is not a directory of ours (a symlink, another user's): in a shared
            temp dir that is someone trying to get the replicas' files.
    """
    try:
        os.mkdir(path, 0o711)
    except FileExistsError:
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise OSError(f"{path} exists and is not a directory owned by uid {os.geteuid()}") from None
        for entry in os.listdir(path):
            shutil.rmtree(os.path.join(path, entry), ignore_errors=True)
    os.chmod(path, 0o711)
    for name in WORK_DIRS:
        os.mkdir(os.path.join(path, name), 0o711)
        os.chmod(os.path.join(path, name), 0o711)


def make_scratch(root: str, name: str, uid: int, gid: int | None = None) -> str:
    """A fresh 0700 directory ``root/name`` owned by ``uid:gid`` (``gid`` defaults to ``uid``); its path."""
    path = os.path.join(root, name)
    os.mkdir(path, 0o700)
    os.chown(path, uid, uid if gid is None else gid)
    return path
