"""``fetch``: artifacts downloaded into a task's sandbox before it starts, as the Mesos fetcher does.

Documented in app.raml (``fetch``, type ``Artifact`` in artifact.raml) and in `Application basics
<https://mesosphere.github.io/marathon/docs/application-basics.html>`_: each ``uri`` is downloaded into
the sandbox (the task's working directory) under its last path segment or ``destPath``; ``extract``
(default true) unpacks ``.tar``, ``.tgz``, ``.tar.gz``, ``.tar.bz2``, ``.tar.xz`` and ``.zip`` archives
there; ``executable`` sets the execute bits. A failed fetch fails the task (``TASK_FAILED``, "Failed to
fetch all URIs for container ...", as in the documented event example) and Marathon launches another
after the backoff.

Schemes: ``http``, ``https`` and ``file`` (a path on this machine). ``cache`` is accepted and ignored.
Each artifact is bounded by :data:`MAX_ARTIFACT_BYTES`; archives are unpacked with the ``data`` filter
(no absolute paths, no ``..``, no devices), so an artifact cannot write outside the sandbox.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import trio

if TYPE_CHECKING:
    import httpx

__all__ = ["MAX_ARTIFACT_BYTES", "FetchError", "fetch_all"]

MAX_ARTIFACT_BYTES = 256 * 1024 * 1024
FETCH_TIMEOUT_S = 60.0
_ARCHIVES = (".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz", ".txz", ".zip")


class FetchError(Exception):
    """An artifact could not be fetched; the message says which and why."""


def _target(sandbox: Path, artifact: dict[str, Any]) -> Path:
    name = artifact.get("destPath") or PurePosixPath(unquote(urlsplit(artifact["uri"]).path)).name
    path = (sandbox / name).resolve()
    if not name or sandbox.resolve() not in path.parents:
        raise FetchError(f"{artifact['uri']}: destination {name!r} is not inside the sandbox")
    return path


async def _download(client: httpx.AsyncClient, uri: str, target: Path) -> None:
    scheme = urlsplit(uri).scheme
    if scheme == "file":
        source = Path(unquote(urlsplit(uri).path))
        if not source.is_file():
            raise FetchError(f"{uri}: no such file")
        if source.stat().st_size > MAX_ARTIFACT_BYTES:
            raise FetchError(f"{uri}: larger than {MAX_ARTIFACT_BYTES} bytes")
        await trio.to_thread.run_sync(shutil.copyfile, source, target)
        return
    if scheme not in ("http", "https"):
        raise FetchError(f"{uri}: unsupported scheme {scheme!r} (http, https and file are fetched)")
    size = 0
    async with client.stream("GET", uri) as response:
        if response.status_code != 200:
            raise FetchError(f"{uri}: HTTP {response.status_code}")
        with open(target, "wb") as file:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_ARTIFACT_BYTES:
                    raise FetchError(f"{uri}: larger than {MAX_ARTIFACT_BYTES} bytes")
                file.write(chunk)


def _extract(archive: Path, into: Path) -> None:
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.namelist():
                resolved = (into / member).resolve()
                if resolved != into.resolve() and into.resolve() not in resolved.parents:
                    raise FetchError(f"{archive.name}: member {member!r} would land outside the sandbox")
            zipped.extractall(into)
    else:
        with tarfile.open(archive) as tarred:
            tarred.extractall(into, filter="data")


async def fetch_all(artifacts: list[dict[str, Any]], sandbox: Path) -> None:
    """Fetch every artifact into ``sandbox``, in order.

    Raises:
        FetchError: one could not be fetched or unpacked (the task fails).
    """
    if not artifacts:
        return
    import httpx  # Here, not at the top: most apps fetch nothing, and the emulator starts faster without it.

    async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=True, verify=True) as client:
        for artifact in artifacts:
            uri = artifact["uri"]
            target = _target(sandbox, artifact)
            try:
                await _download(client, uri, target)
                if artifact.get("extract", True) and target.name.endswith(_ARCHIVES):
                    await trio.to_thread.run_sync(_extract, target, sandbox)
            except (httpx.HTTPError, OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
                raise FetchError(f"{uri}: {exc}") from exc
            if artifact.get("executable"):
                os.chmod(target, os.stat(target).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
