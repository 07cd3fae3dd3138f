"""The pure half of the Swarm backend: FunctionSpec <-> service spec, units, names, log lines.

No Docker needed: these are not marked slow.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from faasd.errors import InvalidRequest
from faasd.providers.swarm.handler import (
    ARCHIVE_ENV,
    ARCHIVE_PATH,
    MAX_ARCHIVE_BYTES,
    HandlerConfig,
    config_name,
    referenced_configs,
    runs_faasd_watchdog,
)
from faasd.providers.swarm.spec import (
    CALL_TOKEN_PATH,
    DEFAULT_PLACEMENT,
    DEFAULT_RUN_AS,
    RUN_AS_ENV,
    FunctionRule,
    SecretRef,
    call_token_secret_name,
    check_spec,
    function_name,
    nano_cpus,
    parse_docker_time,
    parse_log_line,
    run_as,
    secret_version,
    service_spec,
    spec_from_service,
    takes_call_token,
)
from faasd.providers.types import FunctionSpec, Resources
from faasd.watchdog.unpack import HANDLER_ARCHIVE_VARIABLE

FULL = FunctionSpec(
    name="full",
    image="faasd/watchdog:latest",
    env_process="python3 handler.py",
    env_vars={"read_timeout": "5s", "MODE": "x"},
    constraints=("node.role == manager",),
    secrets=("api-key", "db"),
    labels={"team": "blue", "com.openfaas.scale.min": "2"},
    annotations={"topic": "payments"},
    limits=Resources(memory="128M", cpu="0.5"),
    requests=Resources(memory="64Mi", cpu="100m"),
    read_only_root_filesystem=True,
)
REFS = [SecretRef("api-key", "id1", "faasd-api-key-aaa"), SecretRef("db", "id2", "faasd-db-bbb")]


def _build(spec: FunctionSpec, **options: object) -> dict:
    arguments: dict = {
        "image": "sha256:abc",
        "replicas": 2,
        "network": "functions",
        "route": "host-port",
        "secrets": REFS if spec.secrets else [],
        "stop_grace_s": 5.0,
    }
    arguments.update(options)
    return service_spec(spec, **arguments)


def _as_service(document: dict) -> dict:
    return {"ID": "x", "Spec": document, "CreatedAt": "2026-11-24T18:16:37.146145436Z"}


def test_full_spec_layout() -> None:
    document = _build(FULL)
    labels = document["Labels"]
    assert labels["com.openfaas.function"] == "full" and labels["function"] == "true"
    assert labels["com.openfaas.annotations.topic"] == "payments" and labels["team"] == "blue"
    container = document["TaskTemplate"]["ContainerSpec"]
    assert container["Image"] == "sha256:abc"
    assert container["Labels"] == {"com.openfaas.function": "full", "function": "true"}
    assert "fprocess=python3 handler.py" in container["Env"] and "MODE=x" in container["Env"]
    assert container["Init"] is True and container["ReadOnly"] is True
    assert container["Mounts"] == [{"Type": "tmpfs", "Target": "/tmp"}]
    assert container["StopGracePeriod"] == 5_000_000_000
    assert container["Secrets"][0]["File"]["Name"] == "/var/openfaas/secrets/api-key"
    assert container["Secrets"][0]["SecretName"] == "faasd-api-key-aaa"
    assert container["Healthcheck"]["Test"] == ["CMD-SHELL", "[ -e /tmp/.lock ]"]
    resources = document["TaskTemplate"]["Resources"]
    assert resources["Limits"] == {"MemoryBytes": 128 * 1024**2, "NanoCPUs": 500_000_000}
    assert resources["Reservations"] == {"MemoryBytes": 64 * 1024**2, "NanoCPUs": 100_000_000}
    assert document["TaskTemplate"]["Placement"] == {
        "Constraints": ["node.role == manager"],
        "Preferences": [{"Spread": {"SpreadDescriptor": "node.id"}}],
    }
    assert document["Mode"] == {"Replicated": {"Replicas": 2}}
    assert document["EndpointSpec"] == {
        "Mode": "dnsrr",
        "Ports": [{"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host"}],
    }
    assert document["UpdateConfig"]["Order"] == "start-first"


def test_overlay_route_publishes_nothing() -> None:
    assert _build(FULL, route="overlay-dns")["EndpointSpec"] == {"Mode": "dnsrr"}


@pytest.mark.parametrize("spec", [FULL, FunctionSpec(name="tiny"), FunctionSpec(name="img", image="sha256:abc")])
def test_round_trip(spec: FunctionSpec) -> None:
    assert spec_from_service(_as_service(_build(spec))) == spec


def test_default_placement_is_applied_and_not_reported() -> None:
    document = _build(FunctionSpec(name="p"))
    assert document["TaskTemplate"]["Placement"]["Constraints"] == [DEFAULT_PLACEMENT]
    assert spec_from_service(_as_service(document)).constraints == ()


def test_a_service_edited_by_hand_reports_what_it_runs() -> None:
    document = _build(FULL)
    document["TaskTemplate"]["ContainerSpec"]["Image"] = "sha256:other"
    document["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"] = 256 * 1024**2
    spec = spec_from_service(_as_service(document))
    assert spec.image == "sha256:other"
    assert spec.limits == Resources(memory=str(256 * 1024**2), cpu="0.5")


def test_hand_made_service() -> None:
    service = {
        "Spec": {
            "Name": "hand",
            "Labels": {"function": "true", "owner": "me"},
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "sha256:abc",
                    "Env": ["fprocess=rev", "A=1"],
                    "Secrets": [{"File": {"Name": "mysecret"}, "SecretName": "mysecret"}],
                }
            },
        }
    }
    assert function_name(service) == "hand"
    spec = spec_from_service(service)
    assert (spec.env_process, dict(spec.env_vars), spec.secrets, dict(spec.labels)) == (
        "rev",
        {"A": "1"},
        ("mysecret",),
        {"owner": "me"},
    )
    assert function_name({"Spec": {"Name": "web", "Labels": {}}}) is None


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("0.5", 500_000_000),
        ("2", 2_000_000_000),
        ("500m", 500_000_000),
        ("100000000", 100_000_000),
        (".25", 250_000_000),
    ],
)
def test_nano_cpus(text: str, nanos: int) -> None:
    assert nano_cpus(text, "limits.cpu") == nanos


@pytest.mark.parametrize(
    ("labels", "limits", "mention"),
    [
        ({"faasd.x": "1"}, None, "reserved"),
        ({"com.openfaas.annotations.topic": "x"}, None, "clashes"),
        ({}, Resources(cpu="lots"), "limits.cpu"),
        ({}, Resources(memory="big"), "limits.memory"),
    ],
)
def test_refused_specs(labels: dict, limits: Resources | None, mention: str) -> None:
    spec = FunctionSpec(name="bad", labels=labels, annotations={"topic": "y"}, limits=limits)
    with pytest.raises(InvalidRequest, match=mention):
        _build(spec)


HANDLER = HandlerConfig("cid", config_name("snip", b"archive"))


def test_handler_archive_is_a_config_the_watchdog_unpacks_and_reads_back_exactly() -> None:
    spec = FunctionSpec(name="snip", env_vars={"mode": "python"}, handler_archive=b"archive")
    document = _build(spec, handler=HANDLER)
    container = document["TaskTemplate"]["ContainerSpec"]
    assert container["Configs"] == [
        {
            "File": {"Name": ARCHIVE_PATH, "UID": "0", "GID": "0", "Mode": 0o444},
            "ConfigID": "cid",
            "ConfigName": HANDLER.docker_name,
        }
    ]
    assert f"handler_archive={ARCHIVE_PATH}" in container["Env"] and container["Dir"] == "/home/app"
    assert "Mounts" not in container  # The unpacked code lives in the container's own layer (exec works).
    assert spec_from_service(_as_service(document), {"cid": b"archive"}) == spec
    # Without the config's data the archive is missing, never a wrong one; the variable is faasd's.
    assert spec_from_service(_as_service(document)) == FunctionSpec(name="snip", env_vars={"mode": "python"})
    # A read-only root: the working directory is a tmpfs of its own, the round trip unchanged.
    read_only = FunctionSpec(name="snip", read_only_root_filesystem=True, handler_archive=b"archive")
    container = _build(read_only, handler=HANDLER)["TaskTemplate"]["ContainerSpec"]
    assert [mount["Target"] for mount in container["Mounts"]] == ["/tmp", "/home/app"]
    assert spec_from_service(_as_service(_build(read_only, handler=HANDLER)), {"cid": b"archive"}) == read_only


def test_handler_archive_needs_its_config() -> None:
    with pytest.raises(ValueError, match="Docker config"):
        _build(FunctionSpec(name="a", handler_archive=b"x"))


def test_handler_config_name_per_content_and_function() -> None:
    names = {config_name(f, a) for f in ("a", "b") for a in (b"1", b"2")}
    assert len(names) == 4 and all(n.startswith("faasd-handler-") for n in names)
    long = config_name("f" * 63, b"x")
    assert len(long) <= 64 and long != config_name("f" * 62 + "g", b"x")


def test_handler_archive_too_large_for_a_config_is_refused_with_the_way_out() -> None:
    check_spec(FunctionSpec(name="a", handler_archive=b"x" * MAX_ARCHIVE_BYTES))
    with pytest.raises(InvalidRequest, match=r"512001 bytes.*Docker config.*faasd build DIR"):
        check_spec(FunctionSpec(name="a", handler_archive=b"x" * (MAX_ARCHIVE_BYTES + 1)))
    with pytest.raises(InvalidRequest, match="handler_archive is set by faasd"):
        check_spec(FunctionSpec(name="a", env_vars={"handler_archive": "/etc/passwd"}, handler_archive=b"x"))


def test_configs_in_use_include_the_rollback_spec() -> None:
    def service(spec_id: str, previous_id: str | None) -> dict:
        def spec(config_id: str) -> dict:
            return {"TaskTemplate": {"ContainerSpec": {"Configs": [{"ConfigID": config_id}]}}}

        return {"Spec": spec(spec_id), **({"PreviousSpec": spec(previous_id)} if previous_id else {})}

    assert referenced_configs([service("new", "old"), service("other", None), {}]) == {"new", "old", "other"}


@pytest.mark.parametrize(
    ("entrypoint", "runs"),
    [
        (["python3", "/faasd.pyz", "watchdog"], True),
        (["/usr/bin/python3", "/opt/faasd.pyz", "watchdog"], True),
        (["fwatchdog"], False),
        (None, False),
        (["python3", "/faasd.pyz", "up"], False),
    ],
)
def test_only_faasd_watchdog_images_take_an_archive(entrypoint: list[str] | None, runs: bool) -> None:
    assert runs_faasd_watchdog({"Config": {"Entrypoint": entrypoint}}) is runs


def test_the_backend_and_the_watchdog_name_the_variable_alike() -> None:
    assert ARCHIVE_ENV == HANDLER_ARCHIVE_VARIABLE


def test_call_token_is_mounted_apart_and_never_reported_as_a_secret() -> None:
    token = SecretRef("", "tid", call_token_secret_name(b"0123456789abcdef0123"))
    document = _build(FULL, call_token=token)
    container = document["TaskTemplate"]["ContainerSpec"]
    mounts = {ref["File"]["Name"]: ref["SecretName"] for ref in container["Secrets"]}
    assert mounts[CALL_TOKEN_PATH] == token.docker_name
    assert token.docker_name.startswith("faasd-call-token-") and "0123456789" not in token.docker_name
    assert f"call_token_file={CALL_TOKEN_PATH}" in container["Env"]
    assert not any("0123456789abcdef" in item for item in container["Env"])
    assert spec_from_service(_as_service(document)) == FULL
    bare = _build(FunctionSpec(name="bare", env_process="cat"), call_token=token)
    assert spec_from_service(_as_service(bare)) == FunctionSpec(name="bare", env_process="cat")
    assert "Secrets" not in _build(FunctionSpec(name="none", env_process="cat"))["TaskTemplate"]["ContainerSpec"]


def _service(
    name: str, *, labels: dict | None = None, networks: tuple[str, ...] = (), spec_networks: bool = False
) -> dict:
    attachments = [{"Target": network} for network in networks]
    spec: dict = {"Name": name, "Labels": labels or {}, "TaskTemplate": {"ContainerSpec": {"Image": "sha256:abc"}}}
    if spec_networks:
        spec["Networks"] = attachments  # The deprecated place, still filled by old clients.
    else:
        spec["TaskTemplate"]["Networks"] = attachments
    return {"ID": f"id-{name}", "Spec": spec}


def test_services_on_the_functions_network_are_functions_without_a_label() -> None:
    """The seed's rule: `docker service create --network=functions --name catservice IMAGE` is a function
    (the CLI writes the network's ID, the API may write its name); labels count anywhere, as before."""
    rule = FunctionRule(networks=frozenset({"functions", "netid123"}))
    assert rule.name(_service("catservice", networks=("netid123",))) == "catservice"
    assert rule.name(_service("by-name", networks=("other", "functions"))) == "by-name"
    assert rule.name(_service("old-client", networks=("netid123",), spec_networks=True)) == "old-client"
    assert rule.name(_service("web", networks=("other",))) is None
    assert rule.name(_service("web")) is None
    assert rule.name(_service("labelled", labels={"function": "true"}, networks=("other",))) == "labelled"
    assert rule.name(_service("openfaas", labels={"com.openfaas.function": "openfaas"})) == "openfaas"
    # Opted out, and the daemon's own service: never functions, on the network or not.
    assert rule.name(_service("db", labels={"function": "false"}, networks=("functions",))) is None
    own = FunctionRule(networks=rule.networks, exclude=frozenset({"id-gateway"}))
    assert own.name(_service("gateway", networks=("netid123",))) is None
    assert own.name(_service("gateway", labels={"function": "true"})) is None
    assert own.name(_service("catservice", networks=("netid123",))) == "catservice"
    # Without a network known (before the first connection) only labels count.
    assert FunctionRule().name(_service("catservice", networks=("netid123",))) is None
    assert function_name(_service("catservice", networks=("netid123",))) is None


def test_only_tasks_given_the_call_token_are_sent_it() -> None:
    token = SecretRef("", "tid", call_token_secret_name(b"0123456789abcdef0123"))
    deployed = _build(FunctionSpec(name="f", env_process="cat"), call_token=token)
    assert takes_call_token(deployed["TaskTemplate"]["ContainerSpec"])
    assert not takes_call_token(_build(FunctionSpec(name="f", env_process="cat"))["TaskTemplate"]["ContainerSpec"])
    assert not takes_call_token(_build(FULL)["TaskTemplate"]["ContainerSpec"])  # Its own secrets only.
    assert not takes_call_token({"Image": "sha256:abc"}) and not takes_call_token(None)


def test_secret_versions() -> None:
    one = secret_version("api-key", b"v1")
    assert one.startswith("faasd-api-key-") and one != secret_version("api-key", b"v2")
    assert one == secret_version("api-key", b"v1")
    long_a, long_b = secret_version("a" * 63, b"v"), secret_version("a" * 62 + "b", b"v")
    assert len(long_a) <= 64 and long_a != long_b


def test_docker_times_and_log_lines() -> None:
    moment = parse_docker_time("2026-11-24T18:16:37.146145436Z")
    assert moment == datetime(2026, 11, 24, 18, 16, 37, 146145, tzinfo=UTC)
    assert parse_docker_time("0001-01-01T00:00:00Z") is not None and parse_docker_time("nope") is None
    line = (
        "2026-11-24T18:16:38.202113320Z com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,"
        "com.docker.swarm.task.id=t1 level=info event=ready"
    )
    assert parse_log_line(line) == (
        datetime(2026, 11, 24, 18, 16, 38, 202113, tzinfo=UTC),
        "t1",
        "level=info event=ready",
    )
    assert parse_log_line("2026-11-24T18:16:38Z plain text")[1:] == ("", "plain text")  # type: ignore[index]
    assert parse_log_line("not a log line") is None


def test_functions_run_unprivileged_and_only_the_watchdog_reads_the_call_token() -> None:
    """The token is 0400 and root's (the watchdog reads it before it drops to run_as); the function's
    own secrets stay 0444; run_as is faasd's, not reported as one of the deployer's envVars."""
    token = SecretRef("", "tid", call_token_secret_name(b"0123456789abcdef0123"))
    document = _build(FULL, call_token=token, image_user="")
    container = document["TaskTemplate"]["ContainerSpec"]
    modes = {ref["File"]["Name"]: (ref["File"]["UID"], ref["File"]["Mode"]) for ref in container["Secrets"]}
    assert modes[CALL_TOKEN_PATH] == ("0", 0o400)
    assert modes["/var/openfaas/secrets/api-key"] == ("0", 0o444)
    assert f"{RUN_AS_ENV}={DEFAULT_RUN_AS}" in container["Env"] and "User" not in container
    assert spec_from_service(_as_service(document)) == FULL
    # An image of faasd's watchdog with a USER of its own: its functions run as that user; the
    # container starts as root so the watchdog can read the token first.
    own = _build(FULL, call_token=token, image_user="app")["TaskTemplate"]["ContainerSpec"]
    assert "run_as=app" in own["Env"] and own["User"] == "0:0"
    assert "User" not in _build(FULL, image_user="root")["TaskTemplate"]["ContainerSpec"]
    # Another watchdog's image (None): the variable is harmless, the container's user untouched.
    other = _build(FULL, image_user=None)["TaskTemplate"]["ContainerSpec"]
    assert f"run_as={DEFAULT_RUN_AS}" in other["Env"] and "User" not in other
    # The deployer's own run_as (root: the documented opt-out) is kept and reported as given.
    opted = FunctionSpec(name="rooted", env_process="cat", env_vars={"run_as": "root"})
    rooted = _build(opted, call_token=token, image_user="app")
    assert rooted["TaskTemplate"]["ContainerSpec"]["Env"].count("run_as=root") == 1
    assert "User" not in rooted["TaskTemplate"]["ContainerSpec"]
    assert spec_from_service(_as_service(rooted)) == opted
    assert run_as(opted, "") == (None, False)
