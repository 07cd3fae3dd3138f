"""``run_as``: a watchdog started as root reads what only it may read, then serves as an unprivileged user.

On Swarm the watchdog is the container's entrypoint and starts as root (images built FROM faasd's
base image have no ``USER``). What only the watchdog needs -- the call token (a Docker secret mounted
0400, owned by root), the handler archive (unpacked into the working directory) -- is read first, as
root; then, before it binds a port or runs any function code, the watchdog becomes ``run_as``:

* ``setgroups([])``, then the gid, then the uid (real, effective and saved: no way back to root),
  which also clears every capability;
* ``PR_SET_NO_NEW_PRIVS``: neither the watchdog nor anything its functions start can gain privileges
  through a set-uid binary or file capabilities.

So the function's processes (forked per call, python mode's workers, http mode's server) run as that
user: the token file is closed to them (EACCES), as are root's files in the image and PID 1's
``/proc`` entries. The Swarm backend sets ``run_as`` on every function (``65534:65534``, ``nobody``,
or the image's own ``USER``; docs/swarm.md "Who a function runs as"); ``run_as=root`` (or ``0``)
keeps root -- the opt-out for an image that needs it, which also gives the function the token.

Values: ``UID[:GID]`` (numbers, need not exist in ``/etc/passwd``), ``NAME[:GROUP]`` (looked up in the
container's ``/etc/passwd``/``/etc/group``; the group defaults to the user's own), or ``root``.
"""

from __future__ import annotations

import grp
import os
import pwd

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the watchdog's start-up).
if TYPE_CHECKING:  # Type checkers see dataclasses; the watchdog's start does not import them.
    from dataclasses import dataclass as record
else:
    from faasd.record import record

__all__ = ["PR_SET_NO_NEW_PRIVS", "RunAs", "drop_to", "parse_run_as"]

PR_SET_NO_NEW_PRIVS = 38
"""prctl option (linux/prctl.h)."""


@record(frozen=True, slots=True)
class RunAs:
    """The user and group a watchdog's functions run as."""

    uid: int
    gid: int

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def parse_run_as(text: str) -> RunAs | None:
    """``run_as``'s value as a :class:`RunAs`; None when empty (the watchdog stays as it started).

    Raises:
        ValueError: malformed, or a name not in ``/etc/passwd``/``/etc/group``; the message says which.
    """
    text = text.strip()
    if not text:
        return None
    user, sep, group = text.partition(":")
    if not user or (sep and not group):
        raise ValueError("use UID[:GID], NAME[:GROUP] or root")
    uid, own_gid = _user(user)
    gid = _group(group) if group else own_gid
    return RunAs(uid=uid, gid=gid)


def _user(text: str) -> tuple[int, int]:
    """(uid, the user's own gid) of a number or a name; a number unknown to ``/etc/passwd`` is its own gid."""
    if text.isdigit():
        uid = _id(text)
        try:
            return uid, pwd.getpwuid(uid).pw_gid
        except KeyError:
            return uid, uid
    try:
        entry = pwd.getpwnam(text)
    except KeyError:
        raise ValueError(f"no user {text!r} in /etc/passwd") from None
    return entry.pw_uid, entry.pw_gid


def _group(text: str) -> int:
    if text.isdigit():
        return _id(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise ValueError(f"no group {text!r} in /etc/group") from None


def _id(text: str) -> int:
    value = int(text)
    if value >= 2**32 - 1:  # (uid_t)-1 means "unchanged" to the kernel.
        raise ValueError(f"{value} is not a valid id")
    return value


def drop_to(run_as: RunAs) -> None:
    """Become ``run_as`` for good, with no new privileges for this process and its children.

    A watchdog not started as root can only stay what it is: fine when that is ``run_as`` already.

    Raises:
        PermissionError: not root and not already ``run_as`` (the message says so).
        OSError: the kernel refused a step.
    """
    if run_as.is_root and os.geteuid() == 0:
        return  # The explicit opt-out: stay root.
    if os.geteuid() != 0:
        if (os.getuid(), os.geteuid()) != (run_as.uid, run_as.uid):
            raise PermissionError(
                f"cannot switch to uid {run_as.uid}: the watchdog runs as uid {os.geteuid()}, not root "
                "(start it as root, or leave run_as unset)"
            )
    else:
        os.setgroups([])
        os.setresgid(run_as.gid, run_as.gid, run_as.gid)
        os.setresuid(run_as.uid, run_as.uid, run_as.uid)
        if 0 in os.getresuid():  # Never serve as root by mistake.
            raise PermissionError(f"still root after setresuid({run_as.uid})")
    _no_new_privileges()


def _no_new_privileges() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(errno)}")
