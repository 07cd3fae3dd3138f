"""A local function's working directory, from spec to disk: checked, built, swapped in.

A deploy is checked before anything is touched (:func:`check_spec`: the command, the secrets), built
in a fresh directory under ``staging/`` (handler archive, ``requirements.txt``, secrets), checked
again as the replica would start (:func:`check_workdir`: the command exists, the watchdog accepts
its settings), and only then swapped in (:func:`install_workdir`), so a bad deploy is a 400 and the
running generation is untouched. Everything here but :func:`check_spec` blocks: the provider runs it
through ``trio.to_thread``.

The environment of a replica (:func:`replica_env`) is here too: the deploy check starts from the same
one a replica gets.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
from secrets import token_hex

from faasd.archive import extract_archive
from faasd.errors import InvalidRequest
from faasd.logs import event
from faasd.providers.base import SecretLookup
from faasd.providers.local.code_check import missing_code
from faasd.providers.local.pip_env import pip_environment
from faasd.providers.local.state import LOCALHOST, Generation, Host
from faasd.providers.types import FunctionSpec, validate_name
from faasd.sandbox import build as sandbox_build
from faasd.sandbox import files as sandbox_files
from faasd.watchdog.config import ConfigError, WatchdogConfig

__all__ = [
    "BASE_ENV_KEYS",
    "SECRETS_DIR",
    "build_sandbox",
    "build_workdir",
    "check_spec",
    "check_workdir",
    "install_workdir",
    "replica_env",
    "write_secrets",
]

log = logging.getLogger("faasd.providers.local")

BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER")
"""Variables a replica inherits from the daemon (when set); nothing else leaks into functions."""

SECRETS_DIR = ".secrets"
"""Name of the secrets directory inside a function's working directory (reserved in archives)."""


async def check_spec(spec: FunctionSpec, secrets: SecretLookup | None) -> tuple[str, dict[str, bytes]]:
    """(fprocess, secret values) for ``spec``, or InvalidRequest before anything is touched."""
    fprocess = spec.env_process or spec.env_vars.get("fprocess", "")
    python_mode = spec.env_vars.get("mode", "").strip() == "python"
    if not fprocess.strip() and not python_mode:
        raise InvalidRequest(
            "envProcess is required on the local backend: the command the watchdog runs for each request "
            "(an image cannot be run here; Python functions can use envVars mode=python instead)"
        )
    if fprocess.strip():
        try:
            argv = shlex.split(fprocess)
        except ValueError as exc:
            raise InvalidRequest(f"envProcess {fprocess!r} cannot be split like a shell would: {exc}") from None
        if not argv:
            raise InvalidRequest("envProcess is empty")
    if len(set(spec.secrets)) != len(spec.secrets):
        raise InvalidRequest("secrets: a secret is listed twice")
    values: dict[str, bytes] = {}
    for secret in spec.secrets:
        validate_name(secret, "secret")
        value = await secrets(secret) if secrets is not None else None
        if value is None:
            raise InvalidRequest(f"secret {secret!r} does not exist: create it before deploying")
        values[secret] = value
    return fprocess, values


def build_workdir(path: str, spec: FunctionSpec) -> None:
    """Fill a fresh working dir with the handler archive (blocking); ``requirements.txt`` is installed
    next (:func:`~faasd.providers.local.requirements.install_requirements`), then the secrets are
    written and :func:`check_workdir` runs.

    Raises:
        InvalidRequest: unsafe or corrupt archive.
    """
    os.mkdir(path, 0o700)  # Opened up to the function's group (if any) once complete.
    if spec.handler_archive:
        extracted = extract_archive(spec.handler_archive, path, reserved=(SECRETS_DIR,))
        event(
            log,
            logging.DEBUG,
            "handler archive unpacked",
            function=spec.name,
            files=extracted.files,
            bytes=extracted.bytes,
        )


def write_secrets(path: str, secrets: dict[str, bytes]) -> None:
    """``.secrets/<name>`` files, 0400 (blocking). After the build, which may write in ``path`` but must
    not see the secrets, and never through a link it may have left there.

    Raises:
        InvalidRequest: the build created ``.secrets`` itself.
    """
    secrets_dir = os.path.join(path, SECRETS_DIR)
    try:
        os.mkdir(secrets_dir, 0o700)
    except FileExistsError:
        raise InvalidRequest(f"requirements.txt: the install created {SECRETS_DIR}, which is reserved") from None
    for name, value in secrets.items():
        fd = os.open(
            os.path.join(secrets_dir, name),
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o400,
        )
        with os.fdopen(fd, "wb") as file:
            file.write(value)


def check_workdir(host: Host, path: str, spec: FunctionSpec, fprocess: str, gid: int | None = None) -> None:
    """Would the replica start: does its command exist, would the watchdog accept the env (blocking).

    With ``gid``, the dir then becomes ``root:<gid>``, readable by the function and nobody else.

    Raises:
        InvalidRequest: command not found, the code it runs missing (:mod:`.code_check`), bad watchdog
            setting.
    """
    env = replica_env(host, Generation(0, spec, fprocess), path, os.path.join(path, ".replica"), listen_fd=3)
    argv = shlex.split(fprocess) if fprocess.strip() else []
    missing = missing_code(argv, spec.env_vars, path, uploaded=bool(spec.handler_archive))
    if missing is not None:  # faas-cli deploys lang/handler functions without their code.
        raise InvalidRequest(missing)
    if argv:
        program = argv[0]
        if "/" in program:
            candidate = os.path.join(path, program)
            executable = candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None
        else:
            executable = shutil.which(program, path=env.get("PATH", os.defpath))
        if executable is None:
            raise InvalidRequest(
                f"envProcess: {program!r} is not found or not executable "
                f"({'in the function directory' if '/' in program else 'on PATH'})"
            )
        env["fprocess"] = shlex.join([os.path.abspath(executable), *argv[1:]])
    env["handler"] = os.path.join(path, env.get("handler") or "handler.py")  # Relative to the function dir.
    try:
        WatchdogConfig.from_env(env)
    except ConfigError as exc:
        raise InvalidRequest(f"envVars: {exc}") from None
    if gid is not None:
        sandbox_files.share_with_group(path, gid)


def build_sandbox(host: Host, path: str, gid: int | None) -> sandbox_build.Build | None:
    """Where ``install_requirements`` runs pip for the function built in ``path``: its sandbox
    (:mod:`faasd.sandbox.build`), or None without one (as the daemon)."""
    if host.sandbox is None or not host.sandbox.isolated:
        return None
    env = {**pip_environment(os.environ), **host.command.env}
    return sandbox_build.Build(host.sandbox, workdir=path, uid=gid, faasd=host.command.argv, env=env)


def install_workdir(host: Host, name: str, staging: str) -> str | None:
    """Swap the new working dir in (blocking); the old one (if any) moves to staging, its path returned.

    Replicas of the old generation keep running in it (a process's cwd follows the inode).
    """
    target = os.path.join(host.functions_dir, name)
    retired = None
    if os.path.lexists(target):
        retired = os.path.join(host.staging_dir, f"{name}.{token_hex(4)}.retired")
        os.rename(target, retired)
    os.rename(staging, target)
    return retired


def replica_env(host: Host, generation: Generation, workdir: str, replica_dir: str, listen_fd: int) -> dict[str, str]:
    """A replica's environment, later entries winning: the daemon's base, ``TMPDIR``, the spec's
    ``envVars``, ``fprocess``, then the control variables and what :func:`~faasd.runtime.self_command`
    needs (the call token is not here: it goes on a pipe)."""
    env = dict(host.base_env)
    env["TMPDIR"] = os.path.join(replica_dir, "tmp")
    env.update(generation.spec.env_vars)
    if generation.fprocess:
        env["fprocess"] = generation.fprocess
    env.update(
        listen_fd=str(listen_fd),
        bind=LOCALHOST,
        metrics_port="0",
        lock_file=os.path.join(replica_dir, ".lock"),
        parent_pid=str(os.getpid()),
        secret_mount_path=os.path.join(workdir, SECRETS_DIR),
    )
    env.update(host.command.env)
    return env
