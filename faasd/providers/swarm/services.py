"""What the Swarm backend writes to dockerd: services, networks, secrets, the call token's config, and
the configs holding handler archives (:mod:`.handler`).

Blocking functions taking the docker SDK client first: the provider runs each through
:meth:`~faasd.providers.swarm.client.DockerClient.call` (a worker thread, errors translated). Updates
write a service's raw spec back with only what changes -- docker-py's ``Service.scale()`` would
write back defaults and restart a replica -- and are retried when another writer got in between
("update out of sequence").
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Mapping
from typing import Any

import docker
import docker.errors

from faasd.errors import BackendError, InvalidRequest
from faasd.logs import event
from faasd.providers.swarm.client import out_of_sequence
from faasd.providers.swarm.handler import LABEL_HANDLER, referenced_configs
from faasd.providers.swarm.spec import CALL_TOKEN_CONFIG, LABEL_OWNER, LABEL_SECRET, SECRET_OWNER, FunctionRule

__all__ = [
    "UPDATE_RETRIES",
    "create_service",
    "ensure_config",
    "ensure_network",
    "ensure_secret",
    "read_archives",
    "remove_unused_handlers",
    "remove_unused_secrets",
    "scale_service",
    "swarm_call_token",
    "update_service",
    "write_spec",
]

log = logging.getLogger("faasd.providers.swarm")

UPDATE_RETRIES = 5
"""Attempts of a service update that loses a race with another writer ("update out of sequence")."""


def create_service(api: docker.APIClient, *, document: dict[str, Any]) -> None:
    api.create_service(
        document["TaskTemplate"],
        name=document["Name"],
        labels=document["Labels"],
        mode=document["Mode"],
        update_config=document["UpdateConfig"],
        rollback_config=document["RollbackConfig"],
        endpoint_spec=document["EndpointSpec"],
    )


def write_spec(api: docker.APIClient, service: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
    """``POST /services/{id}/update`` with exactly ``spec`` (no defaults filled in, nothing fetched)."""
    api.update_service(
        service["ID"],
        service["Version"]["Index"],
        task_template=spec.get("TaskTemplate"),
        name=spec.get("Name"),
        labels=spec.get("Labels") or {},
        mode=spec.get("Mode"),
        update_config=spec.get("UpdateConfig"),
        rollback_config=spec.get("RollbackConfig"),
        endpoint_spec=spec.get("EndpointSpec"),
    )


def retry_out_of_sequence(change: Callable[[], None]) -> None:
    for attempt in range(UPDATE_RETRIES):
        try:
            change()
            return
        except docker.errors.APIError as exc:
            if not out_of_sequence(exc) or attempt == UPDATE_RETRIES - 1:
                raise


def update_service(api: docker.APIClient, *, name: str, document: dict[str, Any]) -> None:
    def change() -> None:
        write_spec(api, api.inspect_service(name), document)

    retry_out_of_sequence(change)


def scale_service(api: docker.APIClient, *, name: str, replicas: int, rule: FunctionRule) -> None:
    """Rewrite the raw spec with a new replica count: the task template is passed back untouched, so
    Swarm starts or stops tasks and restarts none."""

    def change() -> None:
        service = api.inspect_service(name)  # raw: without insertDefaults
        spec = service["Spec"]
        if (spec.get("Name") != name) or rule.name(service) is None:
            raise docker.errors.NotFound(f"no function {name}")
        if "Replicated" not in (spec.get("Mode") or {}):
            raise docker.errors.APIError(f"{name} is a global service", explanation=f"{name} is a global service")
        if int(spec["Mode"]["Replicated"].get("Replicas", 0)) == replicas:
            return
        write_spec(api, service, {**spec, "Mode": {"Replicated": {"Replicas": replicas}}})

    retry_out_of_sequence(change)


def ensure_network(api: docker.APIClient, *, name: str) -> str:
    networks = [network for network in api.networks(names=[name]) if network.get("Name") == name]
    for network in networks:
        if network.get("Scope") == "swarm":
            return str(network["Id"])
    if networks:
        raise InvalidRequest(f"network {name} exists but is not a swarm-scoped overlay network")
    created = api.create_network(
        name,
        driver="overlay",
        attachable=True,
        labels={LABEL_OWNER: SECRET_OWNER, "openfaas": "true"},
        check_duplicate=True,
    )
    event(log, logging.INFO, "network created", network=name)
    return str(created["Id"])


def ensure_secret(api: docker.APIClient, *, docker_name: str, value: bytes, labels: dict[str, str]) -> str:
    for secret in api.secrets(filters={"name": docker_name}):
        if (secret.get("Spec") or {}).get("Name") == docker_name:
            return str(secret["ID"])
    try:
        return str(api.create_secret(docker_name, value, labels=labels)["ID"])
    except docker.errors.APIError as exc:
        if exc.status_code != 409:
            raise
    for secret in api.secrets(filters={"name": docker_name}):  # Created concurrently by someone else.
        if (secret.get("Spec") or {}).get("Name") == docker_name:
            return str(secret["ID"])
    raise BackendError(f"secret {docker_name} exists and cannot be read")


def swarm_call_token(api: docker.APIClient, *, value: bytes, labels: dict[str, str]) -> bytes:
    """The call token kept in the swarm (Docker config ``faasd-call-token``); made from ``value`` when
    the swarm has none. Readable only through the Docker API, which is root on the host anyway."""
    for _ in range(2):
        for config in api.configs(filters={"name": CALL_TOKEN_CONFIG}):
            if (config.get("Spec") or {}).get("Name") == CALL_TOKEN_CONFIG:
                data = (api.inspect_config(config["ID"]).get("Spec") or {}).get("Data") or ""
                return base64.b64decode(data)
        try:
            api.create_config(CALL_TOKEN_CONFIG, value, labels=labels)
            return value
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise  # 409: another daemon made it meanwhile; read theirs.
    raise BackendError(f"Docker config {CALL_TOKEN_CONFIG} exists and cannot be read")


def ensure_config(api: docker.APIClient, *, docker_name: str, value: bytes, labels: dict[str, str]) -> str:
    """The ID of the Docker config ``docker_name`` (its name carries a digest of ``value``), created
    when missing."""
    for _ in range(2):
        for config in api.configs(filters={"name": docker_name}):
            if (config.get("Spec") or {}).get("Name") == docker_name:
                return str(config["ID"])
        try:
            return str(api.create_config(docker_name, value, labels=labels)["ID"])
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise  # 409: made concurrently by another daemon; read theirs.
    raise BackendError(f"Docker config {docker_name} exists and cannot be read")


def read_archives(api: docker.APIClient, *, config_ids: set[str]) -> dict[str, bytes]:
    """The data of the handler archives' configs ``config_ids`` (one listing: configs are not secret,
    the list carries their data)."""
    found = {}
    for config in api.configs(filters={"label": LABEL_HANDLER}):
        if config["ID"] in config_ids:
            found[str(config["ID"])] = base64.b64decode((config.get("Spec") or {}).get("Data") or "")
    return found


def remove_unused_handlers(api: docker.APIClient, *, function: str) -> list[str]:
    """Remove faasd's handler-archive configs of ``function`` that no service uses, in its spec or
    in the previous spec a rollback would return to; the IDs removed."""
    configs = api.configs(filters={"label": f"{LABEL_HANDLER}={function}"})
    if not configs:
        return []
    used = referenced_configs(api.services())
    removed = []
    for config in configs:
        labels = (config.get("Spec") or {}).get("Labels") or {}
        if labels.get(LABEL_OWNER) != SECRET_OWNER or config["ID"] in used:
            continue
        try:
            api.remove_config(config["ID"])
            removed.append(str(config["ID"]))
        except docker.errors.APIError:
            continue  # Taken into use meanwhile (Docker refuses to remove a config a service uses).
    return removed


def remove_unused_secrets(api: docker.APIClient, *, names: set[str]) -> list[str]:
    """Remove faasd's Docker secrets for ``names`` that no service references (Docker refuses the
    removal of one in use: that refusal is the check)."""
    used: set[str] = set()
    for service in api.services():
        container = ((service.get("Spec") or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}
        used.update(ref.get("SecretID") for ref in container.get("Secrets") or [])
    removed = []
    for secret in api.secrets(filters={"label": f"{LABEL_OWNER}={SECRET_OWNER}"}):
        labels = (secret.get("Spec") or {}).get("Labels") or {}
        if labels.get(LABEL_SECRET) not in names or secret["ID"] in used:
            continue
        try:
            api.remove_secret(secret["ID"])
            removed.append(secret["Spec"]["Name"])
        except docker.errors.APIError:
            continue  # Taken into use meanwhile.
    return removed
