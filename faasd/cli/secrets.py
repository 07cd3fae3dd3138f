"""``faasd secret create|list|update|rm``: secrets as faas-cli handles them.

The value comes from ``--from-literal``, ``--from-file`` or stdin (in that order, one of them), and is
trimmed of surrounding whitespace unless ``--no-trim`` -- faas-cli's ``--trim``, default on, so that
``echo s3cret | faasd secret create token`` stores ``s3cret`` without the newline. A value that is not
UTF-8 (a key file) goes as ``rawValue`` (base64). ``create --replace`` updates a secret that exists, as
faas-cli's does.
"""

from __future__ import annotations

import base64
import sys

import click

from faasd.cli.client import ClientError
from faasd.cli.common import CliContext, fail, json_option, pass_cli

__all__ = ["secret"]


def _value_options(function: click.decorators.FC) -> click.decorators.FC:
    function = click.option(
        "--trim/--no-trim", default=True, show_default=True, help="Strip whitespace around the value (as faas-cli)."
    )(function)
    function = click.option(
        "--from-file", type=click.Path(dir_okay=False, exists=True), help="Read the value from this file."
    )(function)
    return click.option("--from-literal", help="The value itself (it shows in your shell's history).")(function)


def _read_value(from_literal: str | None, from_file: str | None, trim: bool) -> bytes:
    if from_literal is not None and from_file is not None:
        raise click.UsageError("give --from-literal or --from-file, not both")
    if from_literal is not None:
        value = from_literal.encode()
    elif from_file is not None:
        try:
            with open(from_file, "rb") as file:
                value = file.read()
        except OSError as exc:
            raise fail(f"cannot read {from_file}: {exc.strerror}") from None
    elif sys.stdin.isatty():
        raise click.UsageError("give the value with --from-literal, --from-file, or on stdin")
    else:
        value = sys.stdin.buffer.read()
    if trim:
        value = value.strip()
    if not value:
        raise click.UsageError("the secret's value is empty")
    return value


def _body(name: str, value: bytes) -> dict[str, str]:
    try:
        return {"name": name, "value": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"name": name, "rawValue": base64.b64encode(value).decode("ascii")}


@click.group()
def secret() -> None:
    """Manage secrets: functions read them as files (/var/openfaas/secrets/NAME, or $secret_mount_path/NAME)."""


@secret.command()
@click.argument("name")
@_value_options
@click.option("--replace", is_flag=True, help="Update the secret when it exists already.")
@pass_cli
def create(
    ctx: CliContext, name: str, from_literal: str | None, from_file: str | None, trim: bool, replace: bool
) -> None:
    """Create secret NAME from --from-literal, --from-file or stdin."""
    body = _body(name, _read_value(from_literal, from_file, trim))
    try:
        ctx.client.request("POST", "/system/secrets", json_body=body)
        ctx.out.success(f"Created secret {name}")
    except ClientError as exc:
        if exc.status != 409 or not replace:
            raise fail(f"secret create {name}: {exc}") from None
        _update(ctx, name, body)


@secret.command()
@click.argument("name")
@_value_options
@pass_cli
def update(ctx: CliContext, name: str, from_literal: str | None, from_file: str | None, trim: bool) -> None:
    """Change secret NAME's value; functions using it see the new value once deployed again."""
    _update(ctx, name, _body(name, _read_value(from_literal, from_file, trim)))


def _update(ctx: CliContext, name: str, body: dict[str, str]) -> None:
    try:
        ctx.client.request("PUT", "/system/secrets", json_body=body)
    except ClientError as exc:
        raise fail(f"secret update {name}: {exc}") from None
    ctx.out.success(f"Updated secret {name}")


@secret.command("list")
@json_option
@pass_cli
def list_secrets(ctx: CliContext) -> None:
    """List the secrets' names (values are never shown)."""
    try:
        secrets = ctx.client.request("GET", "/system/secrets").json()
    except ClientError as exc:
        raise fail(str(exc)) from None
    if ctx.out.json_mode:
        ctx.out.json(secrets)
        return
    ctx.out.table(["SECRET"], [[item["name"]] for item in secrets])


@secret.command()
@click.argument("names", nargs=-1, required=True)
@pass_cli
def rm(ctx: CliContext, names: tuple[str, ...]) -> None:
    """Remove secrets (a secret a function uses cannot be removed: the error names the functions)."""
    for name in names:
        try:
            ctx.client.request("DELETE", "/system/secrets", json_body={"name": name})
        except ClientError as exc:
            raise fail(f"secret rm {name}: {exc}") from None
        ctx.out.success(f"Removed secret {name}")


secret.add_command(rm, "remove")  # faas-cli's name for it.
