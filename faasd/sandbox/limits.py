"""What one local replica may use: memory, CPU, processes, open files, ``/tmp``. Pure.

Where the numbers come from (how each is applied: :mod:`faasd.sandbox.cgroups` where the daemon has
cgroups, :mod:`faasd.sandbox.enter` for the rlimits):

* **memory** -- the spec's ``limits.memory`` (Docker units: ``128M``, ``1G``): the replica's
  ``memory.max`` on cgroup v2 (all its processes together), else ``RLIMIT_AS`` on every process of the
  replica (the watchdog, each call's process, python-mode workers). An address-space cap counts virtual
  memory, so it is stricter than a container's ``memory.max`` (runtimes that reserve large address
  ranges up front, such as V8 or the JVM, need a generous value). ``requests`` are a reservation, which
  a local process cannot have: they are checked like ``limits`` and not applied. No ``limits.memory``:
  no cap (the replica's processes are still the OOM killer's first choice, see :mod:`faasd.sandbox.enter`).
* **cpu** -- the spec's ``limits.cpu`` (``0.5``, ``500m``, nano-CPUs): a CFS quota on the replica's
  cgroup, where there is one; without, not applied.
* **processes** -- label ``com.faasd.limits.processes`` (default :data:`DEFAULT_PROCESSES`): the
  replica cgroup's ``pids.max``, and ``RLIMIT_NPROC``, which the kernel counts per real uid (per user
  namespace): per replica, since each replica has a uid (as root) or a user namespace (bwrap
  otherwise) of its own; the rlimit is not applied in ``none`` mode, where it would count the daemon's
  own processes. It is what stops a fork bomb; the default leaves room for 60 calls in flight that
  each start a process or two (the autoscaler aims at 10 per replica).
* **open files** -- label ``com.faasd.limits.open_files`` (default :data:`DEFAULT_OPEN_FILES`), per
  process (``RLIMIT_NOFILE``).
* **/tmp** (``bwrap`` mode) -- a tmpfs as large as the memory limit, else :data:`DEFAULT_TMP_BYTES`.
* **CPU class** -- label ``com.faasd.cpu-class``: ``auto`` (the default: the daemon decides from the
  function's CPU time per call), ``batch`` (always the idle CPU class) or ``ordinary`` (never):
  :mod:`faasd.sandbox.cpuclass`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from faasd.errors import InvalidRequest
from faasd.providers.types import FunctionSpec, Resources
from faasd.units import NANOS_PER_CPU, parse_cpus, parse_size

__all__ = [
    "CPU_CLASSES",
    "DEFAULT_OPEN_FILES",
    "DEFAULT_PROCESSES",
    "DEFAULT_TMP_BYTES",
    "LABEL_CPU_CLASS",
    "LABEL_OPEN_FILES",
    "LABEL_PROCESSES",
    "MIN_CPU_NANOS",
    "MIN_MEMORY_BYTES",
    "Limits",
    "limits_from_spec",
]

LABEL_PROCESSES = "com.faasd.limits.processes"
LABEL_OPEN_FILES = "com.faasd.limits.open_files"
LABEL_CPU_CLASS = "com.faasd.cpu-class"
CPU_CLASSES = ("auto", "batch", "ordinary")
"""Values of :data:`LABEL_CPU_CLASS`."""

DEFAULT_PROCESSES = 128
"""Processes and threads of one replica: its watchdog (2), its calls' processes (fork mode: one or more
per call in flight; the autoscaler aims at 10 calls per replica) or workers (python mode: at most 8)."""

DEFAULT_OPEN_FILES = 4096
"""Open files per process."""

DEFAULT_TMP_BYTES = 256 * 1024 * 1024
"""Size of a ``bwrap`` replica's private ``/tmp`` when the spec sets no memory limit."""

MIN_MEMORY_BYTES = 64 * 1024 * 1024
"""Smallest ``limits.memory`` accepted: the watchdog alone maps about 30 MB, and a python-mode worker
as much again; below this a replica could not start."""

MIN_CPU_NANOS = NANOS_PER_CPU // 100
"""Smallest ``limits.cpu`` accepted: 0.01 CPU (10m), a quota of 1 ms per 100 ms period, the kernel's
minimum."""

_PROCESSES_RANGE = (16, 1 << 20)
_OPEN_FILES_RANGE = (64, 1 << 20)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Resource limits of one replica (see the module docstring for how each is applied)."""

    memory_bytes: int | None = None
    """``memory.max`` of the replica (cgroup v2) or ``RLIMIT_AS`` of each process; None: no cap."""
    cpu_nanos: int | None = None
    """CPU quota of the replica in nano-CPUs (where it has a cgroup); None: no quota."""
    processes: int = DEFAULT_PROCESSES
    open_files: int = DEFAULT_OPEN_FILES
    cpu_class: str = "auto"
    """One of :data:`CPU_CLASSES`."""

    @property
    def tmp_bytes(self) -> int:
        return self.memory_bytes or DEFAULT_TMP_BYTES


def limits_from_spec(spec: FunctionSpec) -> Limits:
    """The limits ``spec`` asks for.

    Raises:
        InvalidRequest: a memory value that is not a size or is below :data:`MIN_MEMORY_BYTES`, or a
            limit label that is not a whole number in range; the message names the field.
    """
    memory = _memory(spec.limits, "limits")
    _memory(spec.requests, "requests")  # Checked, not applied (module docstring).
    cpu = _cpu(spec.limits, "limits")
    _cpu(spec.requests, "requests")
    return Limits(
        memory_bytes=memory,
        cpu_nanos=cpu,
        processes=_label_int(spec.labels, LABEL_PROCESSES, DEFAULT_PROCESSES, _PROCESSES_RANGE),
        open_files=_label_int(spec.labels, LABEL_OPEN_FILES, DEFAULT_OPEN_FILES, _OPEN_FILES_RANGE),
        cpu_class=_cpu_class(spec.labels),
    )


def _memory(resources: Resources | None, field_name: str) -> int | None:
    if resources is None or not resources.memory:
        return None
    try:
        value = parse_size(resources.memory)
    except ValueError:
        raise InvalidRequest(
            f"{field_name}.memory {resources.memory!r} is not a memory size (use 128M, 1G or bytes)"
        ) from None
    if value < MIN_MEMORY_BYTES:
        raise InvalidRequest(
            f"{field_name}.memory {resources.memory!r} is below the local backend's minimum of "
            f"{MIN_MEMORY_BYTES // (1024 * 1024)}M (it caps every process of the replica, the watchdog's too)"
        )
    return value


def _cpu(resources: Resources | None, field_name: str) -> int | None:
    if resources is None or not resources.cpu:
        return None
    try:
        value = parse_cpus(resources.cpu)
    except ValueError:
        raise InvalidRequest(
            f"{field_name}.cpu {resources.cpu!r} is not a CPU amount (use 0.5, 500m or 500000000)"
        ) from None
    if value < MIN_CPU_NANOS:
        raise InvalidRequest(f"{field_name}.cpu {resources.cpu!r} is below the minimum of 0.01 (10m)")
    return value


def _cpu_class(labels: Mapping[str, str]) -> str:
    text = labels.get(LABEL_CPU_CLASS)
    if text is None:
        return "auto"
    if text.strip() not in CPU_CLASSES:
        raise InvalidRequest(f"label {LABEL_CPU_CLASS}={text!r}: must be one of {', '.join(CPU_CLASSES)}")
    return text.strip()


def _label_int(labels: Mapping[str, str], key: str, default: int, bounds: tuple[int, int]) -> int:
    text = labels.get(key)
    if text is None:
        return default
    low, high = bounds
    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if not low <= value <= high:
        raise InvalidRequest(f"label {key}={text!r}: must be a whole number from {low} to {high}")
    return value
