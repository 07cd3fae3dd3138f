"""The Marathon backend against the Marathon emulator: the conformance suite, plus what only Marathon has.

The emulator (tests/marathon_emulator) serves Marathon's documented v2 API with tasks that are real local
processes: an app with an image runs faasd's watchdog from the zipapp, a command app runs its ``cmd``
(here: the zipapp's ``_marathon-task``, fetched from ``file://.../dist/faasd.pyz`` as the Mesos fetcher
would). Every call below goes to a real replica through the endpoint the provider published; the
conformance suite's emulator has its agent at 127.0.0.2, the only address its tasks listen on, so an
endpoint anywhere but the task's ``host`` fails it.
"""

from __future__ import annotations

import io
import secrets
import ssl
import subprocess
import tarfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from faasd.calltoken import HEADER, CallToken
from faasd.config import DaemonConfig
from faasd.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    Conflict,
    FunctionNotFound,
    InvalidRequest,
    NotSupported,
)
from faasd.providers import Provider, load_provider
from faasd.providers.marathon import appdef, discovery
from faasd.providers.marathon.appdef import LABEL_FUNCTION, function_token
from faasd.providers.marathon.client import Auth
from faasd.providers.marathon.provider import MarathonProvider
from faasd.providers.types import Endpoint, FunctionSpec, LogRequest, Resources
from faasd.registry import EndpointRegistry
from tests.helpers import free_port, scaled
from tests.marathon_emulator.fixture import OTHER_HOST, MarathonEmulator, StartEmulator
from tests.providers.conformance import (
    CHECKS,
    ProviderFactory,
    call,
    check_logs,
    function_spec,
    ready_endpoints,
    running,
    wait_until,
)

IMAGE = "faasd/watchdog:latest"
"""Any image: the emulator runs faasd's watchdog for it (tests/marathon_emulator/images.py)."""
DEPLOY_TIMEOUT_S = 20.0

Maker = Callable[..., ProviderFactory]


@pytest.fixture
def make_marathon(marathon_emulator: StartEmulator, faasd_pyz: Path) -> Maker:
    """``make_marathon(emulator=None, **options)`` -> a factory of started MarathonProviders talking to
    ``emulator`` (a fresh one by default, none with ``url=``); ``options`` go to :class:`MarathonProvider`."""

    def maker(emulator: MarathonEmulator | None = None, **options: Any) -> ProviderFactory:
        url = options.pop("url", None) or (emulator or marathon_emulator(agent_host=OTHER_HOST)).url
        options.setdefault("watchdog_uri", faasd_pyz.as_uri())
        options.setdefault("deploy_timeout_s", scaled(DEPLOY_TIMEOUT_S))

        async def factory(nursery: trio.Nursery) -> tuple[Provider, EndpointRegistry]:
            registry = EndpointRegistry()
            provider = MarathonProvider(url=url, registry=registry, **options)

            async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                try:
                    await provider.run(task_status=task_status)
                finally:
                    with trio.CancelScope(shield=True):
                        await provider.aclose()

            await nursery.start(run)
            return provider, registry

        return factory

    return maker


def marathon(provider: Provider) -> MarathonProvider:
    assert isinstance(provider, MarathonProvider)
    return provider


# -- the conformance suite --------------------------------------------------------------------------


@pytest.mark.parametrize("check", [c for c in CHECKS if c is not check_logs], ids=lambda check: check.__name__)
async def test_conformance(check: Callable[..., Awaitable[None]], make_marathon: Maker) -> None:
    await check(make_marathon(), image=IMAGE)


@pytest.mark.parametrize(
    "check",
    [c for c in CHECKS if c.__name__ in ("check_deploy_status_call", "check_rolling_update")],
    ids=lambda check: check.__name__,
)
async def test_conformance_of_command_tasks(check: Callable[..., Awaitable[None]], make_marathon: Maker) -> None:
    """Without an image: command tasks running the fetched zipapp."""
    await check(make_marathon())


async def test_logs_say_where_to_look_instead(make_marathon: Maker) -> None:
    """Marathon's API serves no task output: 501 naming the Mesos sandbox and the tasks (conformance's
    check_logs cannot pass), 404 for an unknown function as everywhere."""
    async with running(make_marathon()) as (provider, registry):
        await provider.deploy(function_spec("talky", "cat", image=IMAGE), 1)
        (endpoint,) = await ready_endpoints(registry, "talky", 1)
        with pytest.raises(NotSupported) as caught:
            async for _ in provider.logs(LogRequest(name="talky")):
                pass
        assert "Mesos" in caught.value.message and endpoint.replica in caught.value.message
        with pytest.raises(FunctionNotFound):
            async for _ in provider.logs(LogRequest(name="nobody-here")):
                pass


# -- what runs --------------------------------------------------------------------------------------


def _tar_gz(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            member.mode = 0o644
            tar.addfile(member, io.BytesIO(data))
    return raw.getvalue()


async def test_a_handler_archive_runs_as_a_command_task_and_reads_back_exactly(make_marathon: Maker) -> None:
    """No image: the archive travels in the app's env, the task unpacks it and works in it; the spec
    read back from Marathon is the one deployed (what a restarted daemon compares against)."""
    async with running(make_marathon()) as (provider, registry):
        archive = _tar_gz(
            {"handler.sh": b'printf "v1 %s %s" "$(cat data/word.txt)" "$(cat)"\n', "data/word.txt": b"hi"}
        )
        spec = FunctionSpec(
            name="scripted",
            env_process="sh ./handler.sh",
            handler_archive=archive,
            env_vars={"MARKER": "x"},
            labels={"team": "blue"},
            annotations={"owner": "me"},
            limits=Resources(memory="64M", cpu="250m"),
            constraints=("hostname:UNIQUE",),
        )
        await provider.deploy(spec, 1)
        (endpoint,) = await ready_endpoints(registry, "scripted", 1)
        assert await call(endpoint, b"body") == (200, b"v1 hi body")
        assert (await provider.status("scripted")).spec == spec

        archive2 = _tar_gz({"handler.sh": b'printf "v2 %s" "$(cat)"\n'})
        await provider.update(FunctionSpec(name="scripted", env_process="sh ./handler.sh", handler_archive=archive2))
        (endpoint,) = await ready_endpoints(registry, "scripted", 1)
        assert await call(endpoint, b"b") == (200, b"v2 b")


async def test_python_mode_snippet_style_function_runs_from_its_archive(make_marathon: Maker) -> None:
    """The shape of a Flock-of-Birds snippet: python mode, ``handler.py`` from the archive, no image."""
    async with running(make_marathon()) as (provider, registry):
        handler = b"def handle(event, context):\n    return {'statusCode': 200, 'body': 'got ' + event.body.decode()}\n"
        spec = FunctionSpec(name="pyfn", env_vars={"mode": "python"}, handler_archive=_tar_gz({"handler.py": handler}))
        await provider.deploy(spec, 1)
        (endpoint,) = await ready_endpoints(registry, "pyfn", 1)
        assert await call(endpoint, b"it") == (200, b"got it")


async def test_a_new_provider_rebuilds_everything_from_marathon(
    make_marathon: Maker, marathon_emulator: StartEmulator
) -> None:
    """Stateless: a second provider (a restarted daemon) lists the same function with the same spec and
    publishes the same replicas without deploying anything."""
    emulator = marathon_emulator()
    spec = FunctionSpec(name="kept", image=IMAGE, env_process="cat", env_vars={"A": "1"}, labels={"x": "y"})
    async with running(make_marathon(emulator)) as (provider, registry):
        await provider.deploy(spec, 2)
        first = await ready_endpoints(registry, "kept", 2)
    async with running(make_marathon(emulator)) as (provider, registry):
        assert [(s.name, s.replicas, s.spec) for s in await provider.list()] == [("kept", 2, spec)]
        assert await ready_endpoints(registry, "kept", 2) == first
        assert await call(first[0], b"still") == (200, b"still")


def _hand_made(emulator: MarathonEmulator, app: dict[str, Any]) -> None:
    with emulator.client() as client:
        response = client.post("/v2/apps", json=app)
        assert response.status_code == 201, response.text


async def test_apps_made_by_hand_with_the_label_are_adopted(
    make_marathon: Maker, marathon_emulator: StartEmulator
) -> None:
    emulator = marathon_emulator()
    watchdog = {"id": "", "container": {"type": "DOCKER", "docker": {"image": IMAGE}, "portMappings": [
        {"containerPort": 8080, "hostPort": 0}]}, "networks": [{"mode": "container/bridge"}],
        "env": {"fprocess": "cat"}, "cpus": 0.1, "mem": 64}  # fmt: skip
    _hand_made(emulator, {**watchdog, "id": "/faasd/byhand", "labels": {LABEL_FUNCTION: "byhand", "team": "x"}})
    _hand_made(emulator, {**watchdog, "id": "/faasd/nolabel"})
    _hand_made(emulator, {**watchdog, "id": "/elsewhere/labelled", "labels": {LABEL_FUNCTION: "labelled"}})
    async with running(make_marathon(emulator)) as (provider, registry):
        (status,) = await provider.list()
        assert (status.name, status.spec.image, status.spec.env_process, status.spec.labels) == (
            "byhand",
            IMAGE,
            "cat",
            {"team": "x"},
        )
        (endpoint,) = await ready_endpoints(registry, "byhand", 1)
        assert endpoint.call_token is False and endpoint.token_line == b""  # It was given none: send none.
        assert await call(endpoint, b"adopted") == (200, b"adopted")
        with pytest.raises(Conflict, match="not a function"):
            await provider.deploy(function_spec("nolabel", "cat", image=IMAGE), 1)
        with pytest.raises(FunctionNotFound):
            await provider.status("nolabel")
        await provider.remove("byhand")
        await ready_endpoints(registry, "byhand", 0)


async def test_names_marathon_ids_cannot_hold_are_refused_clearly(make_marathon: Maker) -> None:
    async with running(make_marathon()) as (provider, _registry):
        for name in ("Upper", "under_score", "tasks"):
            with pytest.raises(InvalidRequest, match="cannot be a Marathon app id"):
                await provider.deploy(function_spec(name, "cat", image=IMAGE), 1)
            with pytest.raises(FunctionNotFound):
                await provider.status(name)
        assert await provider.list() == []


# -- the call token ---------------------------------------------------------------------------------


async def _raw_call(endpoint: Endpoint, token: bytes | None) -> tuple[int, bytes]:
    headers = {HEADER: token.decode()} if token is not None else {}
    async with httpx.AsyncClient(timeout=scaled(10)) as client:
        response = await client.post(f"http://{endpoint.authority}/", content=b"x", headers=headers)
    return response.status_code, response.content


async def test_each_function_has_its_own_token_and_never_sees_it(make_marathon: Maker) -> None:
    """Replicas refuse calls without their function's token; another function's token does not open them
    (a function reading its own environment learns nothing that opens the others); the function's
    environment does not hold it."""
    token = CallToken(secrets.token_urlsafe(32).encode())
    async with running(make_marathon(call_token=token)) as (provider, registry):
        await provider.deploy(function_spec("one", "env", image=IMAGE), 1)
        await provider.deploy(function_spec("two", "env"), 1)  # A command task: the same rule.
        (one,) = await ready_endpoints(registry, "one", 1)
        (two,) = await ready_endpoints(registry, "two", 1)
        mine = function_token(token.value, "/faasd/one").encode()
        assert one.token_line.endswith(b": " + mine) and one.call_token
        assert mine not in repr(one).encode()
        assert (await _raw_call(one, None))[0] == 403
        assert (await _raw_call(one, token.value))[0] == 403, "the daemon's own token is not the function's"
        assert (await _raw_call(one, two.token_line.split(b": ")[1]))[0] == 403, "another function's token"
        for endpoint in (one, two):
            status, body = await _raw_call(endpoint, endpoint.token_line.split(b": ")[1])
            assert status == 200, body
            assert endpoint.token_line.split(b": ")[1] not in body and b"call_token" not in body, body


# -- deployments and their failures -----------------------------------------------------------------


async def test_a_task_that_fails_is_reported_and_the_new_app_removed(
    make_marathon: Maker, marathon_emulator: StartEmulator
) -> None:
    emulator = marathon_emulator()
    async with running(make_marathon(emulator)) as (provider, _registry):
        started = time.monotonic()
        with pytest.raises(InvalidRequest) as caught:
            await provider.deploy(function_spec("broken", "no-such-program-xyz", image=IMAGE), 1)
        assert time.monotonic() - started < scaled(DEPLOY_TIMEOUT_S) / 2, "reported at the failure, not at the bound"
        assert "did not start on Marathon" in caught.value.message and "removed" in caught.value.message
        with pytest.raises(FunctionNotFound):
            await provider.status("broken")
        assert emulator.deployments() == []


async def test_tasks_never_healthy_time_out_and_are_undone(
    make_marathon: Maker, marathon_emulator: StartEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica that runs but never passes its health check: the deploy ends at marathon_deploy_timeout
    with how far it got, and nothing is left. (Its python-mode watchdog, stuck importing the handler,
    ignores SIGTERM: Marathon kills it after taskKillGracePeriodSeconds, shortened here.)"""
    monkeypatch.setattr(appdef, "KILL_GRACE_S", 1)  # A still-starting watchdog waits for SIGKILL (see below).
    emulator = marathon_emulator()
    stuck = _tar_gz({"handler.py": b"import time\ntime.sleep(600)\n\ndef handle(event, context):\n    return 'x'\n"})
    spec = FunctionSpec(name="stuck", env_vars={"mode": "python"}, handler_archive=stuck)
    async with running(make_marathon(emulator, deploy_timeout_s=3)) as (provider, _registry):
        started = time.monotonic()
        with pytest.raises(BackendTimeout) as caught:
            await provider.deploy(spec, 1)
        assert 3 <= time.monotonic() - started < scaled(3 + 10)
        assert "within 3s (0 of 1 replicas ready" in caught.value.message, caught.value.message
        assert "removed" in caught.value.message
        with pytest.raises(FunctionNotFound):
            await provider.status("stuck")


async def test_a_failed_update_is_rolled_back(make_marathon: Maker) -> None:
    async with running(make_marathon()) as (provider, registry):
        good = function_spec("steady", "cat", image=IMAGE)
        await provider.deploy(good, 1)
        with pytest.raises(InvalidRequest, match="rolls the app back"):
            await provider.update(function_spec("steady", "no-such-program-xyz", image=IMAGE))

        async def back() -> bool:
            status = await provider.status("steady")
            return status.spec == good and status.available_replicas == 1 and status.state == "deployed"

        await wait_until(back, "the previous version to run again")
        (endpoint,) = await ready_endpoints(registry, "steady", 1)
        assert await call(endpoint, b"old") == (200, b"old")


async def test_marathon_validation_errors_are_400_with_their_details(make_marathon: Maker) -> None:
    async with running(make_marathon()) as (provider, _registry):
        with pytest.raises(InvalidRequest) as caught:
            await provider.deploy(FunctionSpec(name="picky", image=IMAGE, constraints=("hostname:LIKE",)), 1)
        assert "Marathon refused the app" in caught.value.message
        assert "/constraints(0)" in caught.value.message and "LIKE" in caught.value.message


async def test_secrets_and_unrunnable_specs_are_refused_before_marathon_sees_them(make_marathon: Maker) -> None:
    async with running(make_marathon(watchdog_uri="")) as (provider, _registry):
        cases = [
            (FunctionSpec(name="s", image=IMAGE, secrets=("api-key",)), "no secret store"),
            (FunctionSpec(name="s", env_process="cat"), "marathon_watchdog_uri"),
            (FunctionSpec(name="s", image=IMAGE, handler_archive=_tar_gz({"a": b"b"})), "handlerArchive"),
            (FunctionSpec(name="s", image=IMAGE, constraints=("node.platform.os == linux",)), "field:OPERATOR"),
            (FunctionSpec(name="s", image=IMAGE, labels={"faasd.x": "y"}), "reserved"),
            (FunctionSpec(name="s", image=IMAGE, limits=Resources(cpu="lots")), "limits.cpu"),
        ]
        for spec, mention in cases:
            with pytest.raises(InvalidRequest, match=mention.replace(".", r"\.")):
                await provider.deploy(spec, 1)
        assert await provider.list() == []


# -- 409: locked by a deployment ----------------------------------------------------------------------


def _hold_lock(emulator: MarathonEmulator, app_id: str, *, forever: bool = False) -> str:
    """Start a deployment on ``app_id`` by hand: a restart, which takes as long as its new task needs
    (the emulator's ``launch_delay``), or with ``forever`` a version whose tasks keep failing, which
    never finishes. Returns its id."""
    with emulator.client() as client:
        if forever:
            response = client.put(f"/v2/apps{app_id}", json={"env": {"fprocess": "no-such-program-xyz"}})
        else:
            response = client.post(f"/v2/apps{app_id}/restart")
        assert response.status_code == 200, response.text
        return str(response.json()["deploymentId"])


async def test_a_locked_app_is_waited_for_then_changed(make_marathon: Maker, marathon_emulator: StartEmulator) -> None:
    """Also: a deploy returns once its own deployment finished (each task stages 0.8 s here)."""
    emulator = marathon_emulator(launch_delay=0.8)
    async with running(make_marathon(emulator)) as (provider, registry):
        await provider.deploy(function_spec("locked", "cat", image=IMAGE), 1)
        assert emulator.deployments() == [], "the deploy waited for its deployment"
        assert [task["state"] for task in emulator.tasks("/faasd/locked")] == ["TASK_RUNNING"]
        deployment = _hold_lock(emulator, "/faasd/locked")
        started = time.monotonic()
        await provider.scale("locked", 2)
        waited = time.monotonic() - started
        assert waited >= 0.3, f"it should have waited for deployment {deployment} (took {waited:.2f}s)"
        assert (await provider.status("locked")).replicas == 2
        await ready_endpoints(registry, "locked", 2)


async def test_a_lock_that_outlasts_the_wait_is_a_conflict_unless_forced(
    make_marathon: Maker, marathon_emulator: StartEmulator
) -> None:
    emulator = marathon_emulator()
    async with running(make_marathon(emulator, lock_wait_s=0.5)) as (provider, _registry):
        await provider.deploy(function_spec("held", "cat", image=IMAGE), 1)
        deployment = _hold_lock(emulator, "/faasd/held", forever=True)
        with pytest.raises(Conflict) as caught:
            await provider.scale("held", 2)
        assert deployment in caught.value.message and "marathon_force" in caught.value.message
        assert (await provider.status("held")).replicas == 1
    async with running(make_marathon(emulator, lock_wait_s=0.5, force=True)) as (provider, _registry):
        started = time.monotonic()
        await provider.scale("held", 2)
        assert time.monotonic() - started < scaled(2), "forced at once"
        assert (await provider.status("held")).replicas == 2


# -- Marathon unreachable, then back --------------------------------------------------------------------


async def test_marathon_down_is_unavailable_with_the_reason_and_recovers(
    make_marathon: Maker,
    marathon_emulator: StartEmulator,
) -> None:
    emulator = marathon_emulator()
    async with running(make_marathon(emulator)) as (provider, registry):
        await provider.deploy(function_spec("survivor", "cat", image=IMAGE), 1)
        (endpoint,) = await ready_endpoints(registry, "survivor", 1)
        emulator.crash()  # The leader dies; Mesos keeps the tasks running.
        with pytest.raises(BackendUnavailable) as caught:
            await provider.list()
        assert emulator.url in caught.value.message and "unreachable" in caught.value.message
        await wait_until(lambda: not provider.health()[0], "health to turn")
        assert emulator.url in provider.health()[1]
        assert registry.get("survivor") == (endpoint,), "what runs stays callable"
        assert await call(endpoint, b"meanwhile") == (200, b"meanwhile")
        with pytest.raises(BackendUnavailable):
            await provider.scale("survivor", 2)

        await trio.to_thread.run_sync(marathon_emulator.restart, emulator)
        await wait_until(lambda: provider.health()[0], "health to come back by itself", timeout_s=15)
        assert [s.name for s in await provider.list()] == ["survivor"]
        await provider.scale("survivor", 2)
        await ready_endpoints(registry, "survivor", 2)


# -- auth and TLS -----------------------------------------------------------------------------------------


async def test_basic_auth_and_dcos_tokens(make_marathon: Maker, marathon_emulator: StartEmulator) -> None:
    basic = marathon_emulator(username="faasd", password="s3cret")
    async with running(make_marathon(basic, auth=Auth("faasd", "s3cret"))) as (provider, _registry):
        assert provider.health()[0]
        await provider.deploy(function_spec("authed", "cat", image=IMAGE), 1)
    async with running(make_marathon(basic, auth=Auth("faasd", "wrong"))) as (provider, _registry):
        healthy, reason = provider.health()
        assert not healthy and "refused faasd's credentials" in reason and "marathon_password" in reason
        assert "wrong" not in reason
        with pytest.raises(BackendError, match="credentials"):
            await provider.list()
    dcos = marathon_emulator(token="dcos-jwt-0123")
    async with running(make_marathon(dcos, auth=Auth(token="dcos-jwt-0123"))) as (provider, _registry):
        assert provider.health()[0] and await provider.list() == []
    async with running(make_marathon(dcos)) as (provider, _registry):
        assert "refused faasd's credentials" in provider.health()[1]


async def test_a_provider_started_while_marathon_is_down_starts_and_catches_up(
    make_marathon: Maker, marathon_emulator: StartEmulator
) -> None:
    port = free_port()
    async with running(make_marathon(url=f"http://127.0.0.1:{port}")) as (provider, _registry):
        healthy, reason = provider.health()
        assert not healthy and f"127.0.0.1:{port}" in reason and "Connection refused" in reason, reason
        with pytest.raises(BackendUnavailable):
            await provider.list()
        emulator = await trio.to_thread.run_sync(lambda: marathon_emulator(port=port))
        await wait_until(lambda: provider.health()[0], "the provider to find Marathon", timeout_s=10)
        await provider.deploy(function_spec("late", "cat", image=IMAGE), 1)
        assert [task["state"] for task in emulator.tasks("/faasd/late")] == ["TASK_RUNNING"]


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it (openssl): (ca.pem, cert.pem, key.pem)."""
    ca, ca_key, cert, key, csr = (directory / n for n in ("ca.pem", "ca.key", "cert.pem", "key.pem", "cert.csr"))
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=faasd test CA"],
        ["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "1", "-extfile", ext],
    ]  # fmt: skip
    for command in commands:
        subprocess.run([str(part) for part in command], check=True, capture_output=True, timeout=30)
    return ca, cert, key


async def _tls_front(
    target_port: int, cert: Path, key: Path, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """HTTPS in front of the emulator (which speaks plain HTTP): TLS on a free port, bytes passed on."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listeners = await trio.open_ssl_over_tcp_listeners(0, context, host="127.0.0.1")
    task_status.started(listeners[0].transport_listener.socket.getsockname()[1])

    async def pump(source: trio.abc.Stream, sink: trio.abc.Stream, done: trio.CancelScope) -> None:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
        done.cancel()

    async def handle(client: trio.SSLStream[trio.SocketStream]) -> None:
        try:  # A client that refuses the certificate breaks the handshake: that connection ends.
            upstream = await trio.open_tcp_stream("127.0.0.1", target_port)
            async with client, upstream, trio.open_nursery() as nursery:
                nursery.start_soon(pump, client, upstream, nursery.cancel_scope)
                nursery.start_soon(pump, upstream, client, nursery.cancel_scope)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    await trio.serve_listeners(handle, listeners)


async def test_tls_is_verified_by_default_and_a_ca_bundle_can_be_given(
    make_marathon: Maker, marathon_emulator: StartEmulator, tmp_path: Path
) -> None:
    ca, cert, key = await trio.to_thread.run_sync(_certificates, tmp_path)
    emulator = marathon_emulator()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_tls_front, emulator.port, cert, key)
        url = f"https://127.0.0.1:{port}"
        async with running(make_marathon(url=url)) as (provider, _registry):
            healthy, reason = provider.health()
            assert not healthy and "TLS" in reason and "certificate" in reason, reason
            with pytest.raises(BackendUnavailable, match="certificate"):
                await provider.list()
        async with running(make_marathon(url=url, ca_file=str(ca))) as (provider, registry):
            assert provider.health()[0], provider.health()
            await provider.deploy(function_spec("secure", "cat", image=IMAGE), 1)
            (endpoint,) = await ready_endpoints(registry, "secure", 1)
            assert await call(endpoint, b"over tls") == (200, b"over tls")
        async with running(make_marathon(url=url, verify=False)) as (provider, _registry):
            assert [status.name for status in await provider.list()] == ["secure"]
        nursery.cancel_scope.cancel()


async def test_marathons_events_bring_changes_made_elsewhere_without_waiting_for_a_listing(
    make_marathon: Maker, marathon_emulator: StartEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the periodic listings pushed out of reach, a scale made by hand in Marathon still reaches the
    registry within seconds: through ``/v2/events`` (each event about the group asks for a listing)."""
    for constant in ("POLL_MIN_S", "POLL_MAX_S", "RESYNC_S"):
        monkeypatch.setattr(discovery, constant, 600.0)
    emulator = marathon_emulator()
    async with running(make_marathon(emulator)) as (provider, registry):
        await provider.deploy(function_spec("evented", "cat", image=IMAGE), 1)  # Published by the deploy.
        await ready_endpoints(registry, "evented", 1)
        with emulator.client() as client:
            assert client.put("/v2/apps/faasd/evented", json={"instances": 2}).status_code == 200
        await ready_endpoints(registry, "evented", 2, timeout_s=10)


async def test_without_the_event_stream_the_periodic_listing_catches_up(
    make_marathon: Maker, marathon_emulator: StartEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other source alone: with the event stream lost for good (a proxy that drops SSE), a scale made
    by hand in Marathon still reaches the registry, through the periodic listing (every RESYNC_S,
    shortened here). Events only make it sooner."""
    monkeypatch.setattr(discovery.Discovery, "_follow_events", lambda self: trio.sleep_forever())
    monkeypatch.setattr(discovery, "RESYNC_S", 0.5)
    emulator = marathon_emulator()
    async with running(make_marathon(emulator)) as (provider, registry):
        await provider.deploy(function_spec("listed", "cat", image=IMAGE), 1)
        await ready_endpoints(registry, "listed", 1)
        with emulator.client() as client:
            assert client.put("/v2/apps/faasd/listed", json={"instances": 2}).status_code == 200
        await ready_endpoints(registry, "listed", 2, timeout_s=10)


async def test_a_replica_is_ready_on_faasds_own_probe_before_marathons_first_health_result(
    make_marathon: Maker, marathon_emulator: StartEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marathon checks every intervalSeconds (60 here): the replica is published as soon as its watchdog
    answers /_/health, long before Marathon has a result for it."""
    monkeypatch.setattr(appdef, "HEALTH_CHECK", {**appdef.HEALTH_CHECK, "intervalSeconds": 60})
    emulator = marathon_emulator()
    async with running(make_marathon(emulator)) as (provider, registry):
        await provider.deploy(function_spec("quick", "cat", image=IMAGE), 0)  # No task: nothing to wait for.
        started = time.monotonic()
        await provider.scale("quick", 1)
        (endpoint,) = await ready_endpoints(registry, "quick", 1, timeout_s=10)
        assert time.monotonic() - started < scaled(10)
        (task,) = emulator.tasks("/faasd/quick")
        assert not task.get("healthCheckResults"), "Marathon has no verdict yet: the probe published it"
        assert await call(endpoint, b"early") == (200, b"early")
        assert (await provider.status("quick")).available_replicas == 1


async def test_load_provider_builds_it_from_the_daemons_settings(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator(token="dcos-jwt-0123")
    env = {"FAASD_MARATHON_TOKEN": "dcos-jwt-0123", "FAASD_MARATHON_GROUP": "team/fns"}
    config = DaemonConfig.load(env=env, flags={"state_dir": "/nonexistent", "marathon_url": emulator.url})
    provider = load_provider("marathon", config=config, registry=EndpointRegistry())
    assert isinstance(provider, MarathonProvider) and provider.group == "/team/fns"
    assert (provider.name, provider.orchestration, provider.persistent) == ("marathon", "marathon", True)
    try:
        assert await provider.list() == [] and provider.health()[0], provider.health()
    finally:
        await provider.aclose()
    with pytest.raises(InvalidRequest, match="marathon_group"):
        load_provider("marathon", config=replace(config, marathon_group="Team"), registry=EndpointRegistry())
