"""``faasd status`` and ``faasd version``: is the daemon up, on which backend, and what runs."""

from __future__ import annotations

from typing import Any

import click

from faasd import __version__
from faasd.cli.client import ClientError, password_candidates
from faasd.cli.common import CliContext, fail, function_state, json_option, pass_cli

__all__ = ["status", "version"]


def _uptime(seconds: float) -> str:
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    if days or hours or minutes:
        parts.append(f"{minutes}m")
    parts.append(f"{seconds}s")
    return "".join(parts)


@click.command()
@click.argument("name", required=False)
@json_option
@pass_cli
def status(ctx: CliContext, name: str | None) -> None:
    """Daemon health, backend, uptime, and a table of functions (or one function's details)."""
    client = ctx.client
    try:
        health = client.request("GET", "/healthz", auth=False, ok=(200, 503), timeout_s=5)
    except ClientError as exc:
        if ctx.out.json_mode:
            ctx.out.json({"gateway": ctx.gateway, "running": False, "error": str(exc)})
        raise fail(f"faasd is not running at {ctx.gateway} ({exc}); start it with 'faasd up'") from None
    try:
        info = client.request("GET", "/system/info").json()
        functions = client.request("GET", "/system/functions").json()
        detail = client.request("GET", f"/system/function/{name}").json() if name else None
        scaling = client.request("GET", f"/system/scaling/{name}", ok=(200, 501)).json() if name else None
    except ClientError as exc:
        if exc.status == 401:
            where = ctx.password_source or " or ".join(password_candidates({}))
            raise fail(
                f"faasd is running at {ctx.gateway}, but the credentials were refused; the password is in "
                f"{where} (user admin), or set FAASD_PASSWORD"
            ) from None
        raise fail(str(exc)) from None
    own: dict[str, Any] = info.get("faasd", {})
    if ctx.out.json_mode:
        ctx.out.json(
            {
                "gateway": ctx.gateway,
                "running": True,
                "healthy": health.status == 200,
                "info": info,
                "functions": functions,
                **({"function": detail, "scaling": scaling} if detail else {}),
            }
        )
        return
    healthy = health.status == 200
    state = click.style("healthy", fg="green") if healthy else click.style(f"degraded: {own.get('health')}", fg="red")
    if not ctx.out.stdout_tty:
        state = "healthy" if healthy else f"degraded: {own.get('health')}"
    provider = info.get("provider", {})
    ctx.out.fields(
        [
            ("faasd", f"{info.get('version', {}).get('release', '?')} at {ctx.gateway}"),
            ("Status", state),
            ("Backend", f"{provider.get('orchestration', '?')} ({provider.get('provider', '?')})"),
            ("Uptime", _uptime(float(own.get("uptime_seconds", 0)))),
            ("Password", f"{own.get('password_file', '?')} (user admin)"),
            *_sandbox_rows(own.get("sandbox")),
            ("Functions", len(functions)),
            *([("Async queue", _queue_line(own["async"]))] if isinstance(own.get("async"), dict) else []),
        ]
    )
    if detail is not None:
        click.echo()
        rows: list[tuple[str, object]] = [
            ("Function", detail["name"]),
            ("Replicas", f"{detail.get('availableReplicas', 0)}/{detail.get('replicas', 0)} ready"),
            ("State", function_state(detail)),
            ("Invocations", detail.get("invocationCount", 0)),
        ]
        queue = own.get("async")
        if isinstance(queue, dict):
            line = queue.get("functions", {}).get(name) or {"queued": 0, "running": 0, "oldestSeconds": 0}
            rows.append(("Async queue", _queue_line(line)))
        if isinstance(scaling, dict) and "settings" in scaling:
            rows += _scaling_rows(scaling)
        ctx.out.fields(rows)
        return
    if functions:
        click.echo()
        table = [
            [
                f["name"],
                f.get("replicas", 0),
                f.get("availableReplicas", 0),
                f.get("invocationCount", 0),
                f.get("image") or f.get("envProcess", ""),
                function_state(f, reason=False),
            ]
            for f in functions
        ]
        ctx.out.table(["FUNCTION", "REPLICAS", "AVAILABLE", "INVOCATIONS", "IMAGE/PROCESS", "STATE"], table)


def _sandbox_rows(sandbox: object) -> list[tuple[str, object]]:
    """The local backend's sandbox: its mode, and in full why when functions are not isolated."""
    if not isinstance(sandbox, dict):
        return []
    mode = str(sandbox.get("mode", "?"))
    if sandbox.get("isolated"):
        rows: list[tuple[str, object]] = [("Sandbox", f"{mode}: {sandbox.get('reason', '')}")]
    else:
        rows = [("Sandbox", f"{mode} -- WARNING: {sandbox.get('reason', 'functions are not isolated')}")]
    cgroups = sandbox.get("cgroups")
    if isinstance(cgroups, dict):  # A cgroup per replica (docs/sandbox.md, "Limits"), or why not.
        if cgroups.get("mode") == "none":
            rows.append(("Cgroups", f"none (rlimits only): {cgroups.get('reason', '')}"))
        else:
            rows.append(("Cgroups", f"{cgroups.get('mode')}: {cgroups.get('reason', '')}"))
        if "cpu_classes" in cgroups:  # CPU-heavy functions in the idle class (docs/sandbox.md, "CPU classes").
            rows.append(("CPU classes", cgroups["cpu_classes"]))
    return rows


def _queue_line(queue: dict[str, Any]) -> str:
    """``3 calls (1 running), oldest 12s`` -- or ``empty``."""
    queued = int(queue.get("queued", 0))
    if not queued:
        return "empty"
    return (
        f"{queued} call{'s' if queued != 1 else ''} ({queue.get('running', 0)} running), "
        f"oldest {float(queue.get('oldestSeconds', 0)):.0f}s"
    )


def _scaling_rows(scaling: dict[str, Any]) -> list[tuple[str, object]]:
    """The autoscaler's view of one function (``GET /system/scaling/NAME``) as describe rows."""
    load, settings = scaling["load"], scaling["settings"]
    unit = "in flight" if load["type"] == "capacity" else "calls/s"
    zero = f"after {settings['zeroDurationSeconds']:g}s idle" if settings["zero"] else "off"
    queued = f", {load['queued']:g} queued async calls among it" if load.get("queued") else ""
    return [
        (
            "Load",
            f"{load['stable']:.1f} {unit} (60s), {load['panic']:.1f} (6s), idle {load['idleSeconds']:.0f}s{queued}",
        ),
        ("Desired", f"{scaling['desiredReplicas']}" + (" (panicking)" if scaling["panicking"] else "")),
        ("Why", scaling["reason"]),
        (
            "Scaling",
            f"min {settings['min']}, max {settings['max']}, {settings['type']} target "
            f"{settings['target']:g} x {settings['targetProportion']:g}, to zero {zero}",
        ),
    ]


@click.command()
@json_option
@pass_cli
def version(ctx: CliContext) -> None:
    """Versions of this CLI and of the daemon it talks to."""
    server: dict[str, Any] | None
    try:
        server = ctx.client.request("GET", "/system/info", timeout_s=5).json()
    except ClientError:
        server = None
    if ctx.out.json_mode:
        ctx.out.json({"client": __version__, "server": server})
        return
    click.echo(f"faasd {__version__}")
    if server is not None:
        provider = server.get("provider", {})
        click.echo(
            f"gateway {ctx.gateway}: faasd {server.get('version', {}).get('release', '?')}, "
            f"backend {provider.get('orchestration', '?')}"
        )
    else:
        click.echo(f"gateway {ctx.gateway}: not reachable")
