"""Container images for the Swarm backend, built without any registry.

Two images, both made by the Docker engine from data streamed by this module (no ``docker`` CLI, no
registry, no network):

* **the base image** ``faasd/watchdog:latest`` (:func:`build_base`): a scratch image holding the
  host's Debian ``python3.11`` with its stdlib and the shared libraries ``ldd`` says they need, a
  static busybox for a POSIX shell and the usual commands (``sh``, ``cat``, ``wc``, ...), and the very
  ``faasd.pyz`` that built it at ``/faasd.pyz``. Its entrypoint is ``python3 /faasd.pyz watchdog``, its
  working directory ``/home/app``, and its HEALTHCHECK tests the watchdog's lock file. A copy of the
  host's files into ``FROM scratch``: ≈ 50 MB, built in ≈ 2 s, where a
  debootstrap image takes ≈ 30 s and a registry is not needed at all;
* **a function image** (:func:`build_function`): ``FROM <base image ID>``, ``COPY . /home/app`` of a
  function directory, built from an in-memory context with a generated Dockerfile (the directory
  needs none).

The base image is labelled with the sha256 of the zipapp inside it; :func:`build_base` returns the
existing image when the tag already carries this zipapp (tests build once per session, ``faasd
build-base`` is cheap to repeat), unless ``force``.

The docker SDK is blocking and this module is only used by the CLI (``faasd build-base``, ``faasd
build``), the tests and the benchmarks: nothing here runs on an event loop. Docker errors are
translated into :mod:`faasd.errors` types (``BackendUnavailable`` when dockerd cannot be reached,
``InvalidRequest`` for a bad directory or a failing build).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import stat
import subprocess
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from faasd import __version__
from faasd.errors import BackendError, BackendUnavailable, InvalidRequest
from faasd.logs import event

if TYPE_CHECKING:
    import docker

__all__ = [
    "BASE_IMAGE",
    "FUNCTION_DIR",
    "LOCK_FILE",
    "BaseImageSources",
    "build_base",
    "build_function",
    "docker_client",
    "file_sha256",
    "running_zipapp",
]

log = logging.getLogger(__name__)

BASE_IMAGE = "faasd/watchdog:latest"
"""Tag of the base image; function images are built FROM its ID."""

FUNCTION_DIR = "/home/app"
"""Working directory of every function (``COPY . /home/app``), as in the OpenFaaS templates."""

LOCK_FILE = "/tmp/.lock"
"""The watchdog's default lock file (``$TMPDIR/.lock``): written once it serves, removed on SIGTERM."""

HEALTHCHECK_INTERVAL = "2s"
"""Between two HEALTHCHECK probes. Swarm keeps a task ``starting`` until the first probe passes, and
the first probe runs one interval after the start, so this bounds how soon Swarm itself calls a task
running (rolling updates wait for it); faasd's own readiness probe does not wait for it."""

LABEL_PYZ_SHA256 = "faasd.pyz.sha256"
LABEL_FORMAT = "faasd.base.format"
BASE_FORMAT = "1"
"""Bumped when the base image's layout changes, so a cached image of an older layout is rebuilt."""

PYTHON = "/usr/bin/python3.11"
STDLIB = "/usr/lib/python3.11"
BUSYBOX = "/bin/busybox"

STDLIB_EXCLUDES = frozenset(
    {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "sitecustomize.py"}
)
"""Top-level stdlib entries left out: test suites and GUI/IDE parts no function needs (≈ 30 MB), and
Debian's sitecustomize.py, a symlink into /etc that would dangle."""

EXTRA_LIBRARIES = ("libgcc_s.so.1",)
"""Loaded with dlopen by glibc (thread cancellation), so ldd does not list it; copied when present."""

_LDD_PATH = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")
_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BaseImageSources:
    """Host files the base image is made of (defaults: Debian's python3.11 and busybox-static)."""

    pyz: str
    python: str = PYTHON
    stdlib: str = STDLIB
    busybox: str = BUSYBOX


@dataclass(frozen=True, slots=True)
class _Entry:
    """One member of the image's root filesystem: a directory, a file copied from ``source``, a file
    with ``data``, or a symlink to ``link``."""

    path: str
    kind: str
    mode: int = 0o755
    source: str = ""
    data: bytes = b""
    link: str = ""


# -- docker client ----------------------------------------------------------------------------------


def docker_client(docker_host: str = "", *, timeout_s: float = 120.0) -> docker.DockerClient:
    """A Docker client for ``docker_host`` (else ``$DOCKER_HOST``, else the local socket).

    Raises:
        BackendUnavailable: dockerd cannot be reached.
    """
    import docker
    import docker.errors

    try:
        if docker_host:
            return docker.DockerClient(base_url=docker_host, version="auto", timeout=int(timeout_s))
        return docker.from_env(version="auto", timeout=int(timeout_s))
    except docker.errors.DockerException as exc:
        raise BackendUnavailable(
            f"cannot reach dockerd ({docker_host or 'DOCKER_HOST/default socket'}): {exc}"
        ) from exc


@contextlib.contextmanager
def _docker_errors(what: str) -> Iterator[None]:
    """Translate docker SDK and transport errors raised while doing ``what`` into faasd errors."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except docker.errors.BuildError as exc:
        raise InvalidRequest(f"{what}: {exc.msg}") from exc
    except docker.errors.APIError as exc:
        raise BackendError(f"{what}: {exc.explanation or exc}") from exc
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        raise BackendUnavailable(f"{what}: dockerd unreachable: {exc}") from exc


# -- the base image ---------------------------------------------------------------------------------


def running_zipapp() -> str | None:
    """Path of the ``faasd.pyz`` this process runs from, or None when it runs from a source tree."""
    from faasd.runtime import self_command

    return self_command().zipapp


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def build_base(
    client: docker.DockerClient,
    sources: BaseImageSources,
    *,
    tag: str = BASE_IMAGE,
    force: bool = False,
) -> str:
    """Make the base image from host files and tag it; return its ID (``sha256:...``).

    Args:
        client: where to import the image.
        sources: the zipapp to put inside, and the host's interpreter, stdlib and static busybox.
        tag: the image's name.
        force: rebuild even when ``tag`` already carries this zipapp.

    Returns:
        The image ID; use it (not the tag) in service specs, so Swarm never looks for a registry.

    Raises:
        InvalidRequest: a source is missing (e.g. no static busybox: ``apt-get install busybox-static``).
        BackendUnavailable: dockerd cannot be reached.
        BackendError: dockerd refused the import.

    Resource handling:
        The root filesystem is never written to disk: a tar stream is generated from the host files
        and uploaded chunk by chunk (``docker import -``).
    """
    _check_sources(sources)
    pyz_sha = file_sha256(sources.pyz)
    if not force:
        existing = _existing_image(client, tag)
        if existing is not None:
            labels = existing.get("Config", {}).get("Labels") or {}
            if labels.get(LABEL_PYZ_SHA256) == pyz_sha and labels.get(LABEL_FORMAT) == BASE_FORMAT:
                event(log, logging.INFO, "base image up to date", tag=tag, image=existing["Id"][:19])
                return str(existing["Id"])
    entries = base_entries(sources)
    repository, _, image_tag = tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "latest")
    changes = [
        "ENV PATH=/usr/bin:/bin",
        "ENV PYTHONUNBUFFERED=1",
        f"WORKDIR {FUNCTION_DIR}",
        "EXPOSE 8080",
        'ENTRYPOINT ["python3", "/faasd.pyz", "watchdog"]',
        f"HEALTHCHECK --interval={HEALTHCHECK_INTERVAL} --timeout=2s --retries=3 "
        f'CMD ["sh", "-c", "[ -e {LOCK_FILE} ]"]',
        f"LABEL {LABEL_PYZ_SHA256}={pyz_sha} {LABEL_FORMAT}={BASE_FORMAT} faasd.version={__version__}",
    ]
    with _docker_errors(f"importing {tag}"):
        output = client.api.import_image(
            src=tar_stream(entries), repository=repository, tag=image_tag, changes=changes, stream_src=True
        )
        image_id = _imported_id(output)
        inspected = client.api.inspect_image(tag)
    if image_id and inspected["Id"] != image_id:
        raise BackendError(f"importing {tag}: the tag points at {inspected['Id']}, not the imported {image_id}")
    event(log, logging.INFO, "base image built", tag=tag, image=inspected["Id"][:19], size=inspected.get("Size"))
    return str(inspected["Id"])


def _check_sources(sources: BaseImageSources) -> None:
    for what, path in (("zipapp", sources.pyz), ("python", sources.python), ("busybox", sources.busybox)):
        if not os.path.isfile(path):
            hint = " (apt-get install busybox-static)" if what == "busybox" else ""
            raise InvalidRequest(f"cannot build the base image: {what} {path} does not exist{hint}")
    if not os.path.isdir(sources.stdlib):
        raise InvalidRequest(f"cannot build the base image: no stdlib directory {sources.stdlib}")
    if _shared_libraries([sources.busybox]):
        raise InvalidRequest(
            f"cannot build the base image: {sources.busybox} is dynamically linked; "
            "a static one is needed (apt-get install busybox-static)"
        )


def _existing_image(client: docker.DockerClient, tag: str) -> dict[str, Any] | None:
    import docker.errors

    with _docker_errors(f"inspecting {tag}"):
        try:
            return client.api.inspect_image(tag)
        except docker.errors.ImageNotFound:
            return None


def _imported_id(output: object) -> str | None:
    """The image ID in the import's answer (JSON status lines; the last one is the ID)."""
    text = output.decode() if isinstance(output, bytes) else str(output)
    found = None
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            document = json.loads(line)
            if isinstance(document, dict) and "error" in document:
                raise BackendError(f"docker import: {document['error']}")
            status = document.get("status", "") if isinstance(document, dict) else ""
            if isinstance(status, str) and status.startswith("sha256:"):
                found = status
    return found


def base_entries(sources: BaseImageSources) -> list[_Entry]:
    """Every member of the base image's root filesystem, parents before children.

    Reads the host's file system and runs ``ldd`` (both blocking).
    """
    files: dict[str, _Entry] = {}

    def add(entry: _Entry) -> None:
        files[entry.path.strip("/")] = entry

    python_name = os.path.basename(sources.python)
    add(_Entry(f"usr/bin/{python_name}", "file", 0o755, source=sources.python))
    add(_Entry("usr/bin/python3", "link", link=python_name))
    stdlib_rel = sources.stdlib.strip("/")
    shared_objects = [sources.python]
    for path, rel in _walk_stdlib(sources.stdlib):
        mode = stat.S_IMODE(os.stat(path).st_mode)
        add(_Entry(f"{stdlib_rel}/{rel}", "file", mode, source=path))
        if rel.endswith(".so"):
            shared_objects.append(path)
    for library in _shared_libraries(shared_objects) + _extra_libraries():
        add(_Entry(library, "file", 0o755, source=os.path.realpath(library)))
    add(_Entry("bin/busybox", "file", 0o755, source=sources.busybox))
    for applet in _busybox_applets(sources.busybox):
        if f"usr/bin/{applet}" not in files and applet != "busybox":
            add(_Entry(f"bin/{applet}", "link", link="busybox"))
    add(_Entry("faasd.pyz", "file", 0o644, source=sources.pyz))
    add(
        _Entry("etc/passwd", "data", 0o644, data=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
    )
    add(_Entry("etc/group", "data", 0o644, data=b"root:x:0:\nnogroup:x:65534:\n"))
    directories = {"tmp": 0o1777, "root": 0o700, FUNCTION_DIR.strip("/"): 0o755, "var/openfaas/secrets": 0o755}
    for path in list(files) + list(directories):
        parent = os.path.dirname(path)
        while parent and parent not in directories:
            directories[parent] = 0o755
            parent = os.path.dirname(parent)
    entries = [_Entry(path, "dir", mode) for path, mode in sorted(directories.items())]
    return entries + [files[path] for path in sorted(files)]


def _walk_stdlib(stdlib: str) -> Iterator[tuple[str, str]]:
    """(absolute path, path relative to ``stdlib``) of the stdlib files to copy."""
    for root, dirs, names in os.walk(stdlib):
        rel_root = os.path.relpath(root, stdlib)
        top = rel_root == "."
        dirs[:] = sorted(
            d
            for d in dirs
            if not (
                top and (d in STDLIB_EXCLUDES or d.startswith("config-3") or d in ("site-packages", "dist-packages"))
            )
        )
        for name in sorted(names):
            if top and name in STDLIB_EXCLUDES:
                continue
            if rel_root == "lib-dynload" and name.startswith("_test"):
                continue
            path = os.path.join(root, name)
            if not os.path.isfile(path):  # a dangling symlink
                continue
            yield path, name if top else f"{rel_root}/{name}"


def _shared_libraries(binaries: Iterable[str]) -> list[str]:
    """Absolute paths of the shared libraries (and the dynamic loader) ``ldd`` lists for ``binaries``."""
    found: set[str] = set()
    for binary in binaries:
        try:
            result = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False, timeout=30)
        except FileNotFoundError:
            raise InvalidRequest("cannot build the base image: ldd is missing (apt-get install libc-bin)") from None
        if result.returncode != 0:  # "not a dynamic executable"
            continue
        found.update(match.group(1) for match in _LDD_PATH.finditer(result.stdout))
    return sorted(found)


def _extra_libraries() -> list[str]:
    result = []
    for name in EXTRA_LIBRARIES:
        for directory in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/lib"):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                result.append(path)
                break
    return result


def _busybox_applets(busybox: str) -> list[str]:
    result = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=False, timeout=30)
    return sorted({line.strip() for line in result.stdout.splitlines() if re.fullmatch(r"[\w.\[-]+", line.strip())})


class _Sink(io.RawIOBase):
    """The file tarfile writes to: collects bytes until the generator takes them."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.buffer += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def tar_stream(entries: Iterable[_Entry]) -> Iterator[bytes]:
    """A tar archive of ``entries``, generated chunk by chunk (never held whole in memory).

    Members are owned by root, with a fixed mtime: the same sources give the same layer content.
    """
    sink = _Sink()
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.mode = entry.mode
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link
                tar.addfile(info)
            elif entry.kind == "data":
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                with open(entry.source, "rb") as file:
                    info.size = os.fstat(file.fileno()).st_size
                    tar.addfile(info, file)
            if len(sink.buffer) >= _CHUNK_BYTES:
                yield sink.take()
    yield sink.take()


# -- function images --------------------------------------------------------------------------------

_DOCKERFILE = ".faasd.Dockerfile"


def function_dockerfile(base_id: str, fprocess: str | None = None) -> str:
    """The generated Dockerfile of a function image. Pure."""
    lines = [f"FROM {base_id}", f"COPY . {FUNCTION_DIR}", f"WORKDIR {FUNCTION_DIR}"]
    if fprocess:
        lines.append(f"ENV fprocess={json.dumps(fprocess)}")
    return "\n".join(lines) + "\n"


def build_function(
    client: docker.DockerClient,
    directory: str,
    *,
    tag: str,
    base: str = BASE_IMAGE,
    fprocess: str | None = None,
) -> str:
    """Build a function image from ``directory`` (no Dockerfile needed) and tag it; return its ID.

    The image is ``FROM`` the base image's ID (never a registry lookup), with the directory copied to
    ``/home/app`` and that as the working directory; ``fprocess`` becomes the image's default command.
    A ``.dockerignore`` in the directory is honoured.

    Raises:
        InvalidRequest: ``directory`` is not a directory, the base image is missing, or the build
            failed (the message carries the builder's error).
        BackendUnavailable: dockerd cannot be reached.

    Resource handling:
        The build context is assembled in memory (function directories are small); intermediate
        containers are removed even when the build fails.
    """
    import docker.errors

    if not os.path.isdir(directory):
        raise InvalidRequest(f"{directory} is not a directory")
    with _docker_errors(f"inspecting the base image {base}"):
        try:
            base_id = client.api.inspect_image(base)["Id"]
        except docker.errors.ImageNotFound:
            raise InvalidRequest(f"base image {base} not found; run 'faasd build-base' first") from None
    context = _build_context(directory, function_dockerfile(base_id, fprocess))
    image_id = None
    messages: list[str] = []
    with _docker_errors(f"building {tag} from {directory}"):
        for chunk in client.api.build(
            fileobj=context,
            custom_context=True,
            dockerfile=_DOCKERFILE,
            tag=tag,
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        ):
            if "error" in chunk:
                raise InvalidRequest(f"building {tag}: {str(chunk['error']).strip()}")
            if "stream" in chunk:
                messages.append(str(chunk["stream"]))
            aux = chunk.get("aux")
            if isinstance(aux, dict) and "ID" in aux:
                image_id = aux["ID"]
        if image_id is None:
            image_id = client.api.inspect_image(tag)["Id"]
    event(log, logging.INFO, "function image built", tag=tag, image=str(image_id)[:19])
    return str(image_id)


def _build_context(directory: str, dockerfile: str) -> io.BytesIO:
    """A gzip-less tar of ``directory`` plus the generated Dockerfile, which the COPY leaves out."""
    buffer = io.BytesIO()
    ignore = b""
    ignore_path = os.path.join(directory, ".dockerignore")
    if os.path.isfile(ignore_path):
        with open(ignore_path, "rb") as file:
            ignore = file.read().rstrip(b"\n") + b"\n"
    ignore += f"{_DOCKERFILE}\n.dockerignore\n".encode()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in ((_DOCKERFILE, dockerfile.encode()), (".dockerignore", ignore)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        for entry in sorted(os.listdir(directory)):
            if entry in (_DOCKERFILE, ".dockerignore"):
                continue
            tar.add(os.path.join(directory, entry), arcname=entry, filter=_owned_by_root)
    buffer.seek(0)
    return buffer


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def default_tag(directory: str) -> str:
    """``faasd/<directory name>:latest``, lower-cased and cleaned to a valid repository name. Pure."""
    name = re.sub(r"[^a-z0-9._-]+", "-", os.path.basename(os.path.abspath(directory)).lower()).strip("-._")
    return f"faasd/{name or 'function'}:latest"
