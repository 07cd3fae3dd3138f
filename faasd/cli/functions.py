"""Function commands: deploy, list, describe, invoke, rm, logs, scale."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from faasd.cli.archive import pack_directory
from faasd.cli.client import ClientError
from faasd.cli.common import CliContext, fail, function_state, json_option, pass_cli, wait_for_replicas
from faasd.errors import InvalidRequest
from faasd.providers.types import FunctionSpec
from faasd.stack import StackError, StackFunction, load_stack
from faasd.units import parse_duration

__all__ = ["deploy", "describe", "invoke", "list_functions", "logs", "rm", "scale", "since_time"]


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    result = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint=option)
        result[key] = text
    return result


@click.command()
@click.argument("names", nargs=-1)
@click.option("-f", "--yaml", "stack_file", type=click.Path(dir_okay=False), help="Deploy from a stack.yml.")
@click.option("--fprocess", help="Command run per request (e.g. 'cat', 'python3 handler.py').")
@click.option("--image", default="", help="Container image (Swarm/Marathon backends).")
@click.option("--env", "-e", "envs", multiple=True, help="KEY=VALUE environment variable (repeatable).")
@click.option("--label", "-l", "labels", multiple=True, help="KEY=VALUE label (repeatable).")
@click.option("--annotation", "annotations", multiple=True, help="KEY=VALUE annotation (repeatable).")
@click.option("--secret", "secrets", multiple=True, help="Secret name to mount (repeatable).")
@click.option(
    "--constraint",
    "constraints",
    multiple=True,
    help="Placement constraint, e.g. 'node.role==worker' (Swarm; repeatable).",
)
@click.option("--readonly", is_flag=True, help="Read-only root filesystem (Swarm; as faas-cli's --readonly).")
@click.option("--handler", type=click.Path(file_okay=False, exists=True), help="Directory with the code.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until a replica is ready.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for readiness.")
@json_option
@pass_cli
def deploy(
    ctx: CliContext,
    names: tuple[str, ...],
    stack_file: str | None,
    fprocess: str | None,
    image: str,
    envs: tuple[str, ...],
    labels: tuple[str, ...],
    annotations: tuple[str, ...],
    secrets: tuple[str, ...],
    constraints: tuple[str, ...],
    readonly: bool,
    handler: str | None,
    wait: bool,
    timeout: float,
) -> None:
    """Deploy NAME with --fprocess, or the functions of a stack file (-f stack.yml [NAME...]).

    An existing function is replaced and keeps its replica count.
    """
    if stack_file:
        specs = specs_from_stack(ctx, stack_file, names)
    else:
        if len(names) != 1:
            raise click.UsageError("give one function NAME (or -f stack.yml)")
        spec_document: dict[str, Any] = {
            "service": names[0],
            "image": image,
            "envProcess": fprocess or "",
            "envVars": _pairs(envs, "--env"),
            "labels": _pairs(labels, "--label"),
            "annotations": _pairs(annotations, "--annotation"),
            "secrets": list(secrets),
            "constraints": list(constraints),
            "readOnlyRootFilesystem": readonly,
        }
        try:
            spec = FunctionSpec.from_json(spec_document)
        except InvalidRequest as exc:
            raise fail(exc.message) from None
        if handler:
            spec = _with_handler(spec, handler)
        specs = [spec]
    deployed = [deploy_spec(ctx, spec, wait=wait, timeout_s=timeout) for spec in specs]
    if ctx.out.json_mode:
        ctx.out.json(deployed)


def specs_from_stack(ctx: CliContext, path: str, names: tuple[str, ...] = ()) -> list[FunctionSpec]:
    """The deployments of a stack file (only ``names`` when given); warnings go to stderr."""
    try:
        stack = load_stack(path)
        functions: list[StackFunction] = [stack.function(name) for name in names] if names else list(stack.functions)
    except StackError as exc:
        raise fail(str(exc)) from None
    for warning in stack.warnings:
        ctx.out.warning(warning)
    specs = []
    for function in functions:
        archive = b""
        if function.handler and os.path.isdir(function.handler):
            try:
                archive = pack_directory(function.handler)
            except ValueError as exc:
                raise fail(str(exc)) from None
        elif function.handler:
            raise fail(f"{path}:{function.line}: handler {function.handler} of {function.name} is not a directory")
        try:
            specs.append(function.to_spec(handler_archive=archive))
        except InvalidRequest as exc:
            raise fail(f"{path}:{function.line}: {exc.message}") from None
    return specs


def since_time(since: str) -> str:
    """``--since``: a duration back from now (``5m``, as faas-cli's ``--since``) becomes that RFC 3339
    time; anything else is passed on as a time (the gateway says when it is not one)."""
    try:
        seconds = parse_duration(since)
    except ValueError:
        return since
    moment = datetime.now(UTC) - timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _with_handler(spec: FunctionSpec, handler: str) -> FunctionSpec:
    from dataclasses import replace

    try:
        return replace(spec, handler_archive=pack_directory(handler))
    except ValueError as exc:
        raise fail(str(exc)) from None


def deploy_spec(ctx: CliContext, spec: FunctionSpec, *, wait: bool, timeout_s: float) -> dict[str, Any]:
    """POST one deployment, then (optionally) wait until a replica is ready; returns its status."""
    try:
        ctx.client.request("POST", "/system/functions", json_body=spec.to_json(), timeout_s=max(timeout_s, 30))
    except ClientError as exc:
        raise fail(f"deploy {spec.name}: {exc}") from None
    url = f"{ctx.gateway}/function/{spec.name}"
    status: dict[str, Any] = {"name": spec.name}
    if wait and spec.min_replicas > 0:
        status = wait_for_replicas(ctx, spec.name, 1, timeout_s, "deploying")
    if not ctx.out.json_mode:
        ctx.out.success(f"Deployed {spec.name}" + (" (ready)" if wait else "") + f". URL: {url}")
    return {**status, "url": url}


@click.command("list")
@click.option("--verbose", "-v", is_flag=True, help="Also each function's state and when it was created.")
@json_option
@pass_cli
def list_functions(ctx: CliContext, verbose: bool) -> None:
    """List functions: invocations, replicas (desired/ready), image or process."""
    try:
        functions = ctx.client.request("GET", "/system/functions").json()
    except ClientError as exc:
        raise fail(str(exc)) from None
    if ctx.out.json_mode:
        ctx.out.json(functions)
        return
    rows = [
        [
            f["name"],
            f.get("invocationCount", 0),
            f.get("replicas", 0),
            f.get("availableReplicas", 0),
            f.get("image") or f.get("envProcess", ""),
            *([function_state(f), f.get("createdAt") or ""] if verbose else []),
        ]
        for f in functions
    ]
    headers = ["FUNCTION", "INVOCATIONS", "REPLICAS", "AVAILABLE", "IMAGE/PROCESS"]
    ctx.out.table([*headers, "STATE", "CREATED"] if verbose else headers, rows)


@click.command()
@click.argument("name")
@json_option
@pass_cli
def describe(ctx: CliContext, name: str) -> None:
    """Show everything about one function."""
    try:
        status = ctx.client.request("GET", f"/system/function/{name}").json()
    except ClientError as exc:
        raise fail(str(exc)) from None
    if ctx.out.json_mode:
        ctx.out.json(status)
        return
    available = status.get("availableReplicas", 0)
    ctx.out.fields(
        [
            ("Name", status["name"]),
            ("Status", "Ready" if available else "Not ready"),
            ("State", function_state(status)),
            ("Replicas", status.get("replicas", 0)),
            ("Available", available),
            ("Invocations", status.get("invocationCount", 0)),
            ("Image", status.get("image") or None),
            ("Process", status.get("envProcess") or None),
            ("URL", f"{ctx.gateway}/function/{name}"),
            ("Environment", status.get("envVars")),
            ("Labels", status.get("labels")),
            ("Annotations", status.get("annotations")),
            ("Secrets", status.get("secrets")),
            ("Created", status.get("createdAt")),
        ]
    )


@click.command()
@click.argument("name")
@click.option("--method", "-X", default="POST", show_default=True)
@click.option("--header", "-H", "headers", multiple=True, help="'Name: value' request header (repeatable).")
@click.option("--query", "-q", "queries", multiple=True, help="key=value query parameter (repeatable).")
@click.option("--content-type", default="text/plain", show_default=True)
@click.option("--path", default="", help="Sub-path after /function/NAME.")
@click.option("--timeout", default=120.0, show_default=True)
@click.option(
    "--async",
    "async_call",
    is_flag=True,
    help="Queue the call (/async-function/NAME) instead of waiting for the answer; prints its call id.",
)
@click.option("--callback-url", help="With --async: where the function's answer is POSTed when it is done.")
@json_option
@pass_cli
def invoke(
    ctx: CliContext,
    name: str,
    method: str,
    headers: tuple[str, ...],
    queries: tuple[str, ...],
    content_type: str,
    path: str,
    timeout: float,
    async_call: bool,
    callback_url: str | None,
) -> None:
    """Call a function: stdin is the body, the answer goes to stdout (exit 1 on an error status).

    With --async the call is queued and only its call id is printed; the answer goes to --callback-url.
    """
    body = b"" if sys.stdin.isatty() else sys.stdin.buffer.read()
    request_headers = {"Content-Type": content_type}
    for header in headers:
        key, sep, value = header.partition(":")
        if not sep:
            raise click.BadParameter(f"{header!r} is not 'Name: value'", param_hint="--header")
        request_headers[key.strip()] = value.strip()
    query = _pairs(queries, "--query")
    if callback_url is not None and not async_call:
        raise click.UsageError("--callback-url needs --async")
    if async_call:
        if method.upper() != "POST":
            raise click.UsageError("--async sends POST (the async route accepts nothing else)")
        if callback_url is not None:
            request_headers["X-Callback-Url"] = callback_url
        _invoke_async(ctx, name, path, body, request_headers, query, timeout)
        return
    target = f"/function/{name}" + ("/" + path.lstrip("/") if path else "")
    try:
        response = ctx.client.request(
            method.upper(),
            target,
            body=body if method.upper() not in ("GET", "HEAD") or body else None,
            headers=request_headers,
            query=query,
            auth=False,
            ok=tuple(range(100, 600)),
            timeout_s=timeout,
        )
    except ClientError as exc:
        raise fail(str(exc)) from None
    if response.status >= 400:
        sys.stderr.buffer.write(response.body)
        sys.stderr.flush()
        raise fail(f"function {name} answered {response.status}")
    sys.stdout.buffer.write(response.body)
    sys.stdout.flush()


def _invoke_async(
    ctx: CliContext,
    name: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    query: dict[str, str],
    timeout: float,
) -> None:
    """``POST /async-function/NAME[/PATH]``: 202 and the call id on stdout, or one error line."""
    target = f"/async-function/{name}" + ("/" + path.lstrip("/") if path else "")
    try:
        response = ctx.client.request(
            "POST", target, body=body, headers=headers, query=query, auth=False, ok=(202,), timeout_s=timeout
        )
    except ClientError as exc:
        raise fail(str(exc)) from None
    call_id = next((value for key, value in response.headers.items() if key.lower() == "x-call-id"), "")
    if ctx.out.json_mode:
        ctx.out.json({"function": name, "status": response.status, "callId": call_id})
        return
    click.echo(call_id)
    click.echo(f"Function {name} submitted asynchronously (202 Accepted).", err=True)


@click.command()
@click.argument("names", nargs=-1)
@click.option("-f", "--yaml", "stack_file", type=click.Path(dir_okay=False), help="Remove a stack file's functions.")
@json_option
@pass_cli
def rm(ctx: CliContext, names: tuple[str, ...], stack_file: str | None) -> None:
    """Remove functions: NAME..., or those of a stack file (-f stack.yml [NAME...])."""
    if stack_file:
        try:
            stack = load_stack(stack_file)
            names = tuple(stack.function(name).name for name in names) or tuple(f.name for f in stack.functions)
        except StackError as exc:
            raise fail(str(exc)) from None
    elif not names:
        raise click.UsageError("give the functions to remove (NAME..., or -f stack.yml)")
    for name in names:
        try:
            ctx.client.request("DELETE", "/system/functions", json_body={"functionName": name})
        except ClientError as exc:
            raise fail(f"rm {name}: {exc}") from None
        if not ctx.out.json_mode:
            ctx.out.success(f"Removed {name}")
    if ctx.out.json_mode:
        ctx.out.json({"removed": list(names)})


@click.command()
@click.argument("name")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", "-n", type=int, default=0, help="Only the last N lines (0 = all kept).")
@click.option("--since", help="Only newer lines: a duration back from now (5m, 1h30m) or an RFC 3339 time.")
@click.option("--instance", default="", help="Only this replica.")
@json_option
@pass_cli
def logs(ctx: CliContext, name: str, follow: bool, tail: int, since: str | None, instance: str) -> None:
    """Print a function's log lines (replica watchdogs and the function's stderr)."""
    query = {"name": name, "tail": str(tail), "follow": "true" if follow else "false"}
    if since:
        query["since"] = since_time(since)
    if instance:
        query["instance"] = instance
    try:
        for line in ctx.client.stream_lines("/system/logs", query=query):
            if ctx.out.json_mode:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
                continue
            message = json.loads(line)
            if ctx.out.stdout_tty:
                prefix = click.style(f"{message['timestamp']} {message['instance']}", dim=True)
                click.echo(f"{prefix} {message['text']}")
            else:
                click.echo(f"{message['timestamp']}\t{message['instance']}\t{message['text']}")
    except ClientError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


@click.command()
@click.argument("name")
@click.argument("replicas", type=click.IntRange(0, None))
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until that many are ready.")
@click.option("--timeout", default=60.0, show_default=True)
@json_option
@pass_cli
def scale(ctx: CliContext, name: str, replicas: int, wait: bool, timeout: float) -> None:
    """Set the number of replicas of NAME (0 stops them all)."""
    try:
        ctx.client.request(
            "POST", f"/system/scale-function/{name}", json_body={"serviceName": name, "replicas": replicas}
        )
    except ClientError as exc:
        raise fail(str(exc)) from None
    status: dict[str, Any] = {"name": name, "replicas": replicas}
    if wait:
        status = wait_for_replicas(ctx, name, replicas, timeout, "scaling")
    if ctx.out.json_mode:
        ctx.out.json(status)
    else:
        ctx.out.success(f"Scaled {name} to {replicas}")
