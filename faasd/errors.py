"""faasd's error tree. Each class carries the HTTP status the gateway answers with.

::

    FaasdError (500)
    ├── InvalidRequest (400)          bad JSON, a missing field, an invalid name or value
    │   └── PayloadTooLarge (413)     a body over its limit
    ├── StateError (500)              the state dir or database cannot be used (names the file)
    ├── Unauthorized (401)            missing or wrong credentials
    ├── FunctionNotFound (404)        no function (or secret) by that name
    ├── Conflict (409)                it exists already, or is in use (a secret a function reads)
    ├── NotSupported (501)            the backend cannot do this operation
    ├── BackendError (502)            the backend failed doing what we asked
    │   ├── BackendUnavailable (503)  the backend cannot be reached (dockerd down, Marathon gone)
    │   └── BackendTimeout (504)      the backend did not answer in time
    └── InvocationError (502)         calling a function replica failed
        ├── NoReplicaAvailable (503)  no ready replica within the wait
        └── FunctionTimeout (502)     the replica did not answer in time (502, as OpenFaaS answers)

Foreign exceptions (docker SDK, HTTP client errors) are translated into these at the edge of the
module that calls the foreign code (``raise ... from exc``); nothing else leaves ``providers/``.
The gateway has one handler: status = ``exc.http_status``, body = ``exc.message``, one line.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "Conflict",
    "FaasdError",
    "FunctionNotFound",
    "FunctionTimeout",
    "InvalidRequest",
    "InvocationError",
    "NoReplicaAvailable",
    "NotSupported",
    "PayloadTooLarge",
    "StateError",
    "Unauthorized",
    "describe_exception",
]


class FaasdError(Exception):
    """Base of every error faasd raises on purpose; ``message`` is one line for the user."""

    http_status = 500

    def __init__(self, message: str) -> None:
        # One line whatever the source: a reason quoted from elsewhere (tarfile, sqlite, pip) may span
        # several, and the API, the CLI and the logs all promise one.
        message = " ".join(message.split())
        super().__init__(message)
        self.message = message


class InvalidRequest(FaasdError):
    """The request is malformed or asks for something invalid; the message names the field."""

    http_status = 400


class PayloadTooLarge(InvalidRequest):
    """A body is larger than the configured limit."""

    http_status = 413


class StateError(FaasdError):
    """The daemon's state dir or database cannot be read or written (corrupt, not a directory, not
    writable, a newer schema, disk full); the message names the file. At start-up: one error line and
    exit status 1."""

    http_status = 500


class Unauthorized(FaasdError):
    """Credentials are missing or wrong."""

    http_status = 401


class FunctionNotFound(FaasdError):
    """No function (or secret, or snippet) by that name exists."""

    http_status = 404


class Conflict(FaasdError):
    """The thing to create exists already, or the thing to delete is still in use; the message names
    what is in the way."""

    http_status = 409


class NotSupported(FaasdError):
    """The backend does not implement this operation (never a silent no-op)."""

    http_status = 501


class BackendError(FaasdError):
    """The backend failed while doing what was asked."""

    http_status = 502


class BackendUnavailable(BackendError):
    """The backend cannot be reached now (e.g. dockerd is down); retried by the daemon."""

    http_status = 503


class BackendTimeout(BackendError):
    """The backend did not answer in time."""

    http_status = 504


class InvocationError(FaasdError):
    """Calling a function replica failed (connection refused, reset, bad answer)."""

    http_status = 502


class NoReplicaAvailable(InvocationError):
    """The function exists but no replica became ready within the wait."""

    http_status = 503


class FunctionTimeout(InvocationError):
    """The replica did not answer within the gateway's upstream timeout.

    502 rather than 504: the OpenFaaS gateway answers upstream timeouts with 502 and clients check it.
    """

    http_status = 502


def describe_exception(exc: BaseException, limit: int = 300) -> str:
    """One line for an unexpected exception: ``Type: message``, looking through exception groups that
    hold a single exception (trio nurseries wrap what their tasks raise), cut to ``limit`` characters.

    For status reasons and log lines; the traceback is logged apart.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    text = exc.message if isinstance(exc, FaasdError) else str(exc)
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    line = " ".join(line.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
