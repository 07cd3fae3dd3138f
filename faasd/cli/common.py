"""What every CLI command shares: the gateway client, the output style, and the shared options."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from faasd.cli.client import ClientError, GatewayClient, find_password, gateway_url
from faasd.cli.output import Output

__all__ = ["CliContext", "fail", "json_option", "pass_cli", "wait_for_replicas"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(slots=True)
class CliContext:
    gateway: str
    password: str | None
    password_source: str | None
    out: Output

    @property
    def client(self) -> GatewayClient:
        return GatewayClient(self.gateway, self.password)


def make_context(gateway: str | None, json_mode: bool = False) -> CliContext:
    password, source = find_password(os.environ)
    return CliContext(
        gateway=gateway_url(gateway, os.environ),
        password=password,
        password_source=source,
        out=Output(json_mode=json_mode),
    )


pass_cli = click.make_pass_decorator(CliContext)


def json_option(function: F) -> F:
    """``--json``: machine-readable output on stdout."""

    def enable(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.ensure_object(CliContext).out.json_mode = True
        return value

    return click.option(
        "--json", "json_mode", is_flag=True, expose_value=False, callback=enable, help="Print JSON for scripts."
    )(function)


def fail(message: str, code: int = 1) -> click.ClickException:
    """A one-line error and a non-zero exit (never a traceback)."""
    error = click.ClickException(message)
    # click types exit_code as a ClassVar (the default); an instance's own is how click lets a command
    # choose its exit status.
    error.exit_code = code  # type: ignore[misc]
    return error


def wait_for_replicas(ctx: CliContext, name: str, want: int, timeout_s: float, verb: str) -> dict[str, Any]:
    """Poll the function until ``availableReplicas`` reaches ``want`` (exactly, when 0); show progress.

    Raises:
        click.ClickException: the time is up (what is available then is in the message).
    """
    deadline = time.monotonic() + timeout_s
    status: dict[str, Any] = {}
    with ctx.out.progress(f"{verb} {name}") as progress:
        while True:
            try:
                status = ctx.client.request("GET", f"/system/function/{name}").json()
            except ClientError as exc:
                raise fail(str(exc)) from None
            available = int(status.get("availableReplicas", 0))
            progress.update(f"{available}/{want} ready")
            if (available >= want > 0) or (want == 0 and available == 0):
                return status
            if time.monotonic() >= deadline:
                raise fail(f"{name}: {available}/{want} replicas ready after {timeout_s:g}s; see 'faasd logs {name}'")
            time.sleep(0.05)


def function_state(status: dict[str, Any], *, reason: bool = True) -> str:
    """faasd's state of a function from its FunctionStatus JSON (``faasd.state``): ``deployed``,
    ``restoring`` or ``failed``, with ``: why`` when failed and ``reason``. A gateway without the field
    (an OpenFaaS one) reads as ``deployed``."""
    found = status.get("faasd")
    own: dict[str, Any] = found if isinstance(found, dict) else {}
    state = str(own.get("state") or "deployed")
    why = own.get("reason")
    return f"{state}: {why}" if reason and why else state
