"""``faasd snippet``: Flock-of-Birds snippets from the command line (``/api/*``, docs/fob.md).

``add FILE`` uploads (``POST /api/gen``) and prints the id once the snippet is callable; ``call ID
key:value...`` calls it and prints its result; ``list`` shows every snippet with its function; ``show ID``
prints its source; ``rm ID...`` deletes. A snippet is also the function ``fob-<id>``: ``faasd status``,
``faasd logs fob-<id>`` and ``faasd rm fob-<id>`` work on it like on any function.
"""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import quote

import click

from faasd.cli.client import ClientError, Response
from faasd.cli.common import CliContext, fail, json_option, pass_cli

__all__ = ["snippet"]

_ANY_STATUS = tuple(range(100, 600))


@click.group()
def snippet() -> None:
    """Flock-of-Birds snippets: Python defining callme(), called with key:value arguments."""


@snippet.command("add")
@click.argument("file", type=click.File("rb"))
@click.option("--lang", default="python", show_default=True, help="The snippet's language.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait until it is callable.")
@json_option
@pass_cli
def add(ctx: CliContext, file: Any, lang: str, timeout: float) -> None:
    """Upload FILE (or - for stdin); print the snippet's id once it can be called."""
    source = file.read()
    response = _request(ctx, "POST", f"/api/gen?lang={quote(lang, safe='')}", body=source, timeout_s=timeout)
    document = _answer(response, "add")
    if ctx.out.json_mode:
        ctx.out.json(document)
    else:
        click.echo(document.get("id", ""))


@snippet.command("call")
@click.argument("snippet_id", metavar="ID")
@click.argument("arguments", nargs=-1, metavar="[KEY:VALUE]...")
@click.option("--timeout", default=120.0, show_default=True)
@json_option
@pass_cli
def call(ctx: CliContext, snippet_id: str, arguments: tuple[str, ...], timeout: float) -> None:
    """Call snippet ID with KEY:VALUE arguments (each value reaches callme as a string); print the result.

    A value may hold any character (it is percent-encoded on the way). The result is printed as JSON, a
    string as it is; --json prints the whole answer.
    """
    pairs = []
    for argument in arguments:
        key, colon, value = argument.partition(":")
        if not colon or not key:
            raise click.BadParameter(f"{argument!r} is not KEY:VALUE", param_hint="arguments")
        pairs.append(f"{quote(key, safe='')}:{quote(value, safe='')}")
    path = f"/api/call/{quote(snippet_id, safe='')}" + ("?" + ",".join(pairs) if pairs else "")
    document = _answer(_request(ctx, "GET", path, auth=False, timeout_s=timeout), "call")
    if ctx.out.json_mode:
        ctx.out.json(document)
        return
    result = document.get("result")
    click.echo(result if isinstance(result, str) else json.dumps(result))


@snippet.command("list")
@json_option
@pass_cli
def list_snippets(ctx: CliContext) -> None:
    """Every snippet (oldest first) with its function's replicas and calls (those need the password)."""
    ids = _answer(_request(ctx, "GET", "/api/stats", auth=False), "list").get("functions", [])
    functions: dict[str, dict[str, Any]] = {}
    try:
        listing = ctx.client.request("GET", "/system/functions").json()
        functions = {item.get("name", ""): item for item in listing if isinstance(item, dict)}
    except ClientError:
        pass  # No password here: the ids are public, the functions' figures are not.
    rows = []
    for snippet_id in ids:
        status = functions.get(f"fob-{snippet_id}", {})
        rows.append(
            {
                "id": snippet_id,
                "function": f"fob-{snippet_id}",
                "replicas": status.get("replicas"),
                "available": status.get("availableReplicas"),
                "invocations": status.get("invocationCount"),
            }
        )
    if ctx.out.json_mode:
        ctx.out.json(rows)
        return
    ctx.out.table(
        ["ID", "FUNCTION", "REPLICAS", "AVAILABLE", "INVOCATIONS"],
        [[row["id"], row["function"], row["replicas"], row["available"], row["invocations"]] for row in rows],
    )


@snippet.command("show")
@click.argument("snippet_id", metavar="ID")
@pass_cli
def show(ctx: CliContext, snippet_id: str) -> None:
    """Print snippet ID's source as it was uploaded."""
    response = _request(ctx, "GET", f"/api/cs/{quote(snippet_id, safe='')}")
    if response.status != 200:
        _answer(response, "show")
    sys.stdout.buffer.write(response.body)
    sys.stdout.flush()


@snippet.command("rm")
@click.argument("snippet_ids", nargs=-1, required=True, metavar="ID...")
@json_option
@pass_cli
def rm(ctx: CliContext, snippet_ids: tuple[str, ...]) -> None:
    """Delete snippets (and their functions)."""
    for snippet_id in snippet_ids:
        _answer(_request(ctx, "DELETE", f"/api/gen/{quote(snippet_id, safe='')}"), f"rm {snippet_id}")
        if not ctx.out.json_mode:
            ctx.out.success(f"Removed {snippet_id}")
    if ctx.out.json_mode:
        ctx.out.json({"removed": list(snippet_ids)})


def _request(
    ctx: CliContext, method: str, path: str, *, body: bytes | None = None, auth: bool = True, timeout_s: float = 30.0
) -> Response:
    try:
        return ctx.client.request(method, path, body=body, auth=auth, ok=_ANY_STATUS, timeout_s=timeout_s)
    except ClientError as exc:
        raise fail(str(exc)) from None


def _answer(response: Response, verb: str) -> dict[str, Any]:
    """The JSON object of an answer; an error status (or not JSON) is one line and exit 1."""
    try:
        document = json.loads(response.body)
    except ValueError:
        document = None
    if response.status >= 400 or not isinstance(document, dict):
        if response.status == 401:
            reason = "unauthorized: set FAASD_PASSWORD or make the daemon's password file readable"
        elif isinstance(document, dict) and document.get("error"):
            reason = " ".join(str(document["error"]).split())  # The gateway's error names line and column.
        else:
            text = response.text.strip()
            reason = text.splitlines()[0] if text else "no answer body"
        raise fail(f"{verb}: {response.status}: {reason}")
    return document
