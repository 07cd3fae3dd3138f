"""The REST routes: Marathon's v2 API as documented in
`docs/docs/rest-api/public/api/ <https://github.com/mesosphere/marathon/tree/master/docs/docs/rest-api/public/api>`_
(api.raml and the v2/*.raml files it includes, with their examples).

================================================  ==========================================================
``GET /ping``                                     ``pong`` (text/plain; no authentication)
``GET /v2/info``, ``GET /v2/leader``              this instance, always the elected leader
``GET /v2/apps``                                  ``{"apps": [AppInfo]}``; ``id=`` and ``cmd=`` (substring,
                                                  any case), ``label=`` (selector), ``embed=apps.tasks``,
                                                  ``apps.deployments``, ``apps.counts``,
                                                  ``apps.lastTaskFailure``, ``apps.failures``,
                                                  ``apps.readiness``, ``apps.taskStats``
``POST /v2/apps``                                 201, ``Location``, ``Marathon-Deployment-Id``, AppInfo
                                                  with ``deployments``; ``force``
``GET /v2/apps/{id}``                             ``{"app": AppInfo}`` with tasks, counts, deployments,
                                                  lastTaskFailure; ``/v2/apps/<group>/*`` lists a group
``PUT /v2/apps/{id}``                             200 (201 + ``Location`` when created) ``{"version",
                                                  "deploymentId"}``; ``partialUpdate`` (default true),
                                                  ``force``
``PATCH /v2/apps/{id}``                           partial update of an existing app
``DELETE /v2/apps/{id}``                          deployment result; ``force`` defaults to true
``POST /v2/apps/{id}/restart``                    deployment result; ``force``
``GET /v2/apps/{id}/tasks``                       ``{"tasks": [...]}``, or text/plain
``DELETE /v2/apps/{id}/tasks[/{taskId}]``         kill (``host``, ``scale``, ``force``)
``GET /v2/apps/{id}/versions[/{version}]``        version list / that definition
``GET /v2/tasks``                                 every task; ``status=running|staging``
``GET /v2/groups[/{id}]``                         a group's apps and subgroups (no group API otherwise)
``GET /v2/deployments``                           running deployments
``DELETE /v2/deployments/{id}``                   rollback (200) or, with ``force``, cancel (202)
``GET /v2/events``                                SSE (``Accept: text/event-stream``), ``event_type=``
================================================  ==========================================================

Every answer carries ``X-Marathon-Leader``. Changes are persisted before they are answered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from tests.marathon_emulator.appdef import AppInvalid
from tests.marathon_emulator.deployments import Deployment
from tests.marathon_emulator.errors import ApiError
from tests.marathon_emulator.events import EventBus, sse_frame
from tests.marathon_emulator.labels import LabelSelectorError, parse_selectors
from tests.marathon_emulator.pathid import canonical, task_prefix
from tests.marathon_emulator.shapes import ShapeErrors
from tests.marathon_emulator.state import Caller, ClusterState
from tests.marathon_emulator.tasks import HOST
from tests.marathon_emulator.web import Request, Response, Router, Stream, parse_json

__all__ = ["VERSION", "Api"]

VERSION = "1.11.0-emulator"
_EMBED = {
    "tasks": {"tasks", "deployments"},
    "failures": {"tasks", "lastTaskFailure", "deployments", "counts"},
    "lastTaskFailure": {"lastTaskFailure"},
    "readiness": {"readiness"},
    "taskStats": {"taskStats"},
}
_APP = r"/v2/apps/(?P<id>.+?)"


def _embeds(request: Request, prefix: str) -> set[str]:
    found: set[str] = set()
    for value in request.query.get("embed", []):
        if value.startswith(prefix + "."):
            found |= _EMBED.get(value[len(prefix) + 1 :], set())
    return found


def _result(deployment: Deployment, status: int = 200, **headers: str) -> Response:
    """A deployment result: ``{"version", "deploymentId"}`` and the ``Marathon-Deployment-Id`` header."""
    body = {"version": deployment.version, "deploymentId": deployment.id}
    return Response.json(body, status, **{"Marathon-Deployment-Id": deployment.id, **headers})


def _invalid(exc: ShapeErrors | AppInvalid) -> ApiError:
    message = "Invalid JSON" if isinstance(exc, ShapeErrors) else "Object is not valid"
    return ApiError(422, message, details=exc.details)


class Api:
    """The routes over a :class:`~.state.ClusterState`; ``persist()`` is called before a change is answered."""

    def __init__(self, state: ClusterState, bus: EventBus, persist: Callable[[], None], router: Router) -> None:
        self.state = state
        self.bus = bus
        self.persist = persist
        self.url = ""
        router.add(r"/ping", {"GET": self.ping}, public=True)
        router.add(r"/v2/info", {"GET": self.info})
        router.add(r"/v2/leader", {"GET": self.leader})
        router.add(r"/v2/events", {"GET": self.events})
        router.add(r"/v2/apps/?", {"GET": self.list_apps, "POST": self.create_app})
        router.add(rf"{_APP}/tasks/(?P<task>[^/]+)", {"DELETE": self.kill_task})
        router.add(rf"{_APP}/tasks", {"GET": self.app_tasks, "DELETE": self.kill_app_tasks})
        router.add(rf"{_APP}/restart", {"POST": self.restart_app})
        router.add(rf"{_APP}/versions/(?P<version>[^/]+)", {"GET": self.app_version})
        router.add(rf"{_APP}/versions", {"GET": self.app_versions})
        router.add(
            _APP, {"GET": self.show_app, "PUT": self.put_app, "PATCH": self.patch_app, "DELETE": self.delete_app}
        )
        router.add(r"/v2/tasks", {"GET": self.all_tasks})
        router.add(r"/v2/groups(?P<id>/.*)?", {"GET": self.show_group})
        router.add(r"/v2/deployments/?", {"GET": self.list_deployments})
        router.add(r"/v2/deployments/(?P<id>[^/]+)", {"DELETE": self.cancel_deployment})

    # -- info ----------------------------------------------------------------------------------------

    async def ping(self, request: Request) -> Response:
        return Response(200, b"pong", "text/plain")

    async def info(self, request: Request) -> Response:
        leader = self.url.split("://", 1)[-1]
        return Response.json(
            {
                "name": "marathon",
                "version": VERSION,
                "buildref": "emulator",
                "elected": True,
                "leader": leader,
                "frameworkId": "emulated-framework-0000",
                "marathon_config": {
                    "master": "emulated",
                    "local_port_min": 10000,
                    "local_port_max": 20000,
                    "hostname": HOST,
                    "features": [],
                    "mesos_role": "*",
                    "task_launch_timeout": 300000,
                },
                "zookeeper_config": {"zk": "emulated"},
                "http_config": {"http_port": int(leader.rsplit(":", 1)[-1] or 0)},
            }
        )

    async def leader(self, request: Request) -> Response:
        return Response.json({"leader": self.url.split("://", 1)[-1]})

    async def events(self, request: Request) -> Response | Stream:
        if "text/event-stream" not in request.headers.get("accept", ""):
            body = b"<html><body><h2>HTTP ERROR: 405</h2><p>Accept: text/event-stream needed</p></body></html>"
            return Response(405, body, "text/html")
        types = request.query.get("event_type")
        wanted = frozenset(types) if types else None

        subscription = self.bus.subscribe(wanted, request.client)  # before the answer: no event is missed

        async def frames() -> AsyncIterator[bytes]:
            async for event in subscription.receive:
                yield sse_frame(event)

        return Stream(frames(), close=subscription.close)

    # -- apps ----------------------------------------------------------------------------------------

    def _caller(self, request: Request) -> Caller:
        return Caller(request.client, request.uri)

    async def list_apps(self, request: Request) -> Response:
        embed = _embeds(request, "apps")
        id_part, cmd_part = request.arg("id"), request.arg("cmd")
        try:
            selectors = parse_selectors(request.arg("label") or "")
        except LabelSelectorError as exc:
            raise ApiError(422, str(exc)) from None
        apps = []
        for record in self.state.live_apps():
            app = record.app
            assert app is not None
            if id_part is not None and id_part.lower() not in app["id"].lower():
                continue
            if cmd_part is not None and cmd_part.lower() not in (app.get("cmd") or "").lower():
                continue
            if not all(selector.matches(app.get("labels", {})) for selector in selectors):
                continue
            apps.append(self.state.app_info(record, embed))
        return Response.json({"apps": apps})

    async def create_app(self, request: Request) -> Response:
        body = parse_json(request.body)
        try:
            info, deployment = self.state.create(body, force=request.flag("force", False), caller=self._caller(request))
        except (ShapeErrors, AppInvalid) as exc:
            raise _invalid(exc) from None
        self.persist()
        headers = {"Location": f"{self.url}/v2/apps{info['id']}", "Marathon-Deployment-Id": deployment.id}
        return Response.json(info, 201, **headers)

    async def show_app(self, request: Request) -> Response:
        raw = request.params["id"]
        embed = _embeds(request, "app") | {"tasks", "lastTaskFailure", "deployments"}
        if raw == "*" or raw.endswith("/*"):
            group = canonical(raw[:-1])
            prefix = group.rstrip("/") + "/"
            records = [r for r in self.state.live_apps() if r.app_id.startswith(prefix)]
            if not records and group != "/":
                raise ApiError(404, f"Group '{group}' does not exist")
            return Response.json({"*": [self.state.app_info(record, embed) for record in records]})
        record = self.state.record(canonical(raw))
        return Response.json({"app": self.state.app_info(record, embed)})

    async def put_app(self, request: Request) -> Response:
        return await self._update(request, partial=request.flag("partialUpdate", True), allow_create=True)

    async def patch_app(self, request: Request) -> Response:
        return await self._update(request, partial=True, allow_create=False)

    async def _update(self, request: Request, *, partial: bool, allow_create: bool) -> Response:
        app_id = canonical(request.params["id"])
        body = parse_json(request.body)
        try:
            created, deployment = self.state.update(
                app_id,
                body,
                partial=partial,
                force=request.flag("force", False),
                allow_create=allow_create,
                caller=self._caller(request),
            )
        except (ShapeErrors, AppInvalid) as exc:
            raise _invalid(exc) from None
        self.persist()
        if created:
            return _result(deployment, 201, Location=f"{self.url}/v2/apps{app_id}")
        return _result(deployment)

    async def delete_app(self, request: Request) -> Response:
        app_id = canonical(request.params["id"])
        deployment = self.state.delete(app_id, force=request.flag("force", True), caller=self._caller(request))
        self.persist()
        return _result(deployment)

    async def restart_app(self, request: Request) -> Response:
        deployment = self.state.restart(canonical(request.params["id"]), force=request.flag("force", False))
        self.persist()
        return _result(deployment)

    async def app_versions(self, request: Request) -> Response:
        record = self.state.record(canonical(request.params["id"]))
        return Response.json({"versions": [app["version"] for app in record.versions]})

    async def app_version(self, request: Request) -> Response:
        app_id = canonical(request.params["id"])
        record = self.state.record(app_id)
        for app in record.versions:
            if app["version"] == request.params["version"]:
                return Response.json(app)
        raise ApiError(404, f"App '{app_id}' does not exist in version {request.params['version']}")

    # -- tasks ---------------------------------------------------------------------------------------

    async def app_tasks(self, request: Request) -> Response:
        record = self.state.record(canonical(request.params["id"]))
        tasks = list(record.tasks.values())
        accept = request.headers.get("accept", "")
        if "text/plain" in accept and "application/json" not in accept:
            assert record.app is not None
            lines = []
            for index, service_port in enumerate(tasks[0].to_json()["servicePorts"] if tasks else []):
                endpoints = " ".join(f"{task.host}:{task.ports[index]}" for task in tasks if index < len(task.ports))
                lines.append(f"{task_prefix(record.app_id)} {service_port} {endpoints}\n")
            return Response(200, "".join(lines).encode(), "text/plain")
        return Response.json({"tasks": [task.to_json() for task in tasks]})

    async def all_tasks(self, request: Request) -> Response:
        wanted = {"running": {"TASK_RUNNING"}, "staging": {"TASK_STAGING", "TASK_STARTING"}}.get(
            (request.arg("status") or "").lower()
        )
        tasks = [
            task.to_json()
            for record in self.state.apps.values()
            for task in record.tasks.values()
            if wanted is None or task.state in wanted
        ]
        return Response.json({"tasks": tasks})

    async def kill_app_tasks(self, request: Request) -> Response:
        app_id = canonical(request.params["id"])
        record = self.state.record(app_id)
        host = request.arg("host")
        tasks = [task for task in record.tasks.values() if host is None or host in ("*", task.host)]
        return self._kill(request, app_id, tasks, single=False)

    async def kill_task(self, request: Request) -> Response:
        app_id = canonical(request.params["id"])
        record = self.state.record(app_id)
        task_id = request.params["task"]
        tasks = [task for task in record.tasks.values() if task_id in (task.id, task.instance_id)]
        if not tasks:
            raise ApiError(404, f"Task '{task_id}' does not exist")
        return self._kill(request, app_id, tasks, single=True)

    def _kill(self, request: Request, app_id: str, tasks: list[Any], *, single: bool) -> Response:
        scale = request.flag("scale", False)
        if scale and request.flag("wipe", False):
            raise ApiError(400, "You cannot use scale and wipe at the same time.")
        listed = [task.to_json() for task in tasks]
        deployment = self.state.kill_tasks(app_id, tasks, scale=scale, force=request.flag("force", False))
        self.persist()
        if deployment is not None:
            return _result(deployment)
        return Response.json({"task": listed[0]} if single else {"tasks": listed})

    # -- groups and deployments ----------------------------------------------------------------------

    async def show_group(self, request: Request) -> Response:
        group = canonical(request.params.get("id") or "/")
        prefix = "/" if group == "/" else group + "/"
        records = [record for record in self.state.live_apps() if record.app_id.startswith(prefix)]
        if group != "/" and not records:
            raise ApiError(404, f"Group '{group}' does not exist")
        return Response.json(self._group(group, records))

    def _group(self, group: str, records: list[Any]) -> dict[str, Any]:
        prefix = "/" if group == "/" else group + "/"
        apps, children = [], set()
        for record in records:
            rest = record.app_id[len(prefix) :]
            if "/" in rest:
                children.add(prefix + rest.split("/", 1)[0])
            else:
                apps.append(self.state.app_info(record, set()))
        groups = [
            self._group(child, [record for record in records if record.app_id.startswith(child + "/")])
            for child in sorted(children)
        ]
        versions = [record.app["version"] for record in records if record.app is not None]
        return {"id": group, "apps": apps, "groups": groups, "pods": [], "version": max(versions, default=None)}

    async def list_deployments(self, request: Request) -> Response:
        return Response.json([deployment.to_json() for deployment in self.state.deployments.values()])

    async def cancel_deployment(self, request: Request) -> Response:
        rollback = self.state.cancel(request.params["id"], force=request.flag("force", False))
        self.persist()
        if rollback is None:
            return Response(202, b"", None)
        return _result(rollback)
