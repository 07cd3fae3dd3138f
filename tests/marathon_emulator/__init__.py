"""An emulator of Marathon's v2 REST API, to test faasd's Marathon backend on a machine without Marathon.

**Why an emulator.** Marathon cannot run on these machines: it needs a Mesos master and agents,
libmesos and ZooKeeper, none of which is packaged here, and DC/OS support ended in 2021. So this package
implements, in Python, the part of the API a faasd backend uses, **to Marathon's documented behaviour**:
the REST API reference in the Marathon repository (`docs/docs/rest-api/public/api/
<https://github.com/mesosphere/marathon/tree/master/docs/docs/rest-api/public/api>`_: api.raml, the v2
resources, the RAML types and the JSON examples) and the user documentation at
https://mesosphere.github.io/marathon/docs/ (application basics, ports, networking, health checks,
deployments, event bus, task environment variables). Each module cites the pages it follows. It is a
test double: where it differs from Marathon, the difference is named below or in the module concerned.

**What it emulates** (routes: :mod:`.routes`)

* apps: create, read (``id``/``cmd``/``label`` filters, ``embed``), update (partial or full, scale),
  patch, delete, restart, versions; app-definition reading and validation with Marathon's status codes
  and error bodies (:mod:`.shapes`, :mod:`.appdef`, :mod:`.pathid`, :mod:`.labels`), answered in the
  current (1.5+) networking form;
* deployments that take time and lock their app (409 with the deployment ids unless ``force=true``),
  rolling restarts bounded by ``upgradeStrategy``, rollback or forced cancel
  (:mod:`.deployments`, :mod:`.state`, :mod:`.scheduler`);
* tasks that are **real local processes** on the one agent's address (``127.0.0.1``, or another
  loopback address with ``--agent-host``, so that a client calling a task elsewhere than at its ``host``
  fails) with host ports and the documented environment (:mod:`.tasks`, :mod:`.processes`): the app's
  ``cmd`` through ``/bin/sh -c``, or for a container image faasd's watchdog from ``dist/faasd.pyz``
  (:mod:`.images` says how an image maps to a command, and why); ``fetch`` artifacts (:mod:`.fetcher`);
  killed or failed tasks replaced with the launch backoff; health checks really probed, with results in
  the tasks and unhealthy tasks killed (:mod:`.health`);
* the event stream ``/v2/events`` (SSE) with the documented event types (:mod:`.events`);
* HTTP basic auth and DC/OS ``Authorization: token=...`` (:mod:`.web`);
* persistence: with ``--state FILE`` app definitions, deployments and tasks survive a restart
  (:mod:`.store`); a killed emulator's tasks keep running and are adopted by the next one, a stopped
  emulator's tasks are stopped with it and started anew by the next one (:mod:`.server`).

**What it leaves out**: pods, the groups API beyond reading (``GET /v2/groups``), bulk
``PUT``/``PATCH /v2/apps``, ``/v2/queue``, ``/v2/leader`` changes (always leader), metrics, plugins,
authorisation (403); container networks (``networks`` mode ``container``, ``USER``/``NONE``, ``ipAddress``:
refused with 422 saying so); Docker itself (no image is pulled or run; see :mod:`.images`); readiness
checks (accepted and reported, not run); resources, constraints, roles and ``acceptedResourceRoles``
(validated, not enforced: there is one agent with room for everything); secrets (refused as by a
Marathon without the ``secrets`` feature); persistent volumes; ``unreachableStrategy``; HTTPS on the
API itself. Event order is this emulator's; Marathon guarantees none.

**Running it.** ``python -m tests.marathon_emulator --port 8080`` (see :mod:`.__main__`); in tests,
:mod:`tests.marathon_emulator.fixture` starts one per test as a subprocess that can be killed and
restarted mid-run.
"""
