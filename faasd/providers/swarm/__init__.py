"""The ``swarm`` backend: every function is a Docker Swarm service, every replica a task.

Swarm keeps the deployments (``persistent = True``): the daemon holds no state of its own about them
and rebuilds everything from the swarm after a restart. Services made by hand are functions too when
they carry the OpenFaaS labels (anywhere) or are attached to the functions network -- the faas seed's
rule, ``docker service create --network=functions --name catservice IMAGE`` with no label
(:class:`~.spec.FunctionRule`: ``function=false`` opts a service on the network out; the daemon's
own service never counts). How a FunctionSpec becomes a service (labels, secrets,
read-only root, health check, resources, ...) is in :mod:`.spec`.

**Docker.** Everything goes through the docker SDK, whose calls block: each runs in a worker thread
(``trio.to_thread.run_sync``), never on the event loop, and its errors are translated into
:mod:`faasd.errors` by :func:`~.client.map_exceptions` (dockerd unreachable or not a swarm manager ->
``BackendUnavailable``, 503). Images are used by ID (a tag is resolved on this engine first), so Swarm
never tries a registry unless ``pull`` is set. Scaling rewrites the service's raw spec with only a
new replica count: docker-py's ``Service.scale()`` would write back defaults and restart a replica.

**Endpoints.** A task is published to the :class:`~faasd.registry.EndpointRegistry` once its desired
state is ``running``, its container runs, and faasd's own probe (``GET /_/health`` on the watchdog)
answers 200 -- faasd does not wait for Swarm's health check, whose first probe comes 2 s after the
start. Where it is called depends on ``route``:

* ``host-port`` (a daemon on the host): each task faasd deploys publishes the watchdog port in host
  mode on a port Docker picks, and faasd calls ``127.0.0.1:<that port>`` (read from the container as
  soon as it starts; Swarm reports it only once the task is healthy), or, for a task on another node,
  ``<that node's address>:<that port>`` (:mod:`.nodes`). No IPVS is needed. A service made by hand is
  reachable that way only if it publishes one.
* ``overlay-dns`` (the daemon runs in a container or as a Swarm service on the functions network, as
  the seed's and OpenFaaS's gateways did): faasd calls each task's address on that network, port
  8080 -- the addresses ``tasks.<name>`` resolves to there. Nothing is published on the host.
* ``auto`` (the default) is one of them, chosen on connecting from where the daemon runs
  (:mod:`.placement`): ``overlay-dns`` in a container attached to the network.

Each endpoint says whether its task was given the call token (mounted by faasd as a Docker secret):
the gateway sends the token only to those, never to a service made by hand without it.

**Several nodes.** Replicas are spread over the nodes (placement preference ``spread=node.id``); a
function's image reaches the other nodes through their engines when the daemon is given them
(:mod:`.engines`); ready replicas on other nodes are probed so a lost node's are unpublished within
0.5 s (:mod:`.liveness`); a node back gets its share again (:mod:`.rebalance`).

Discovery (events, re-reads, resyncs, dockerd down) is in :mod:`.discovery`; what is known of each
function's tasks, when a task is published and when a function is ``failed``, in :mod:`.views`.

**Handler archives** (``faasd deploy --handler DIR``, Flock-of-Birds snippets): the archive is a
Docker config mounted into the tasks, which faasd's watchdog unpacks before it starts (:mod:`.handler`).

Modules: :mod:`.provider` (the :class:`SwarmProvider`: operations), :mod:`.spec` (FunctionSpec <->
service), :mod:`.handler` (handler archives as configs), :mod:`.client` (the docker SDK on worker
threads, errors translated), :mod:`.services` (writes: services, networks, secrets, configs),
:mod:`.tasks` (reads: tasks and their addresses), :mod:`.nodes` (the swarm's nodes), :mod:`.views`,
:mod:`.discovery`, :mod:`.liveness`, :mod:`.rebalance`, :mod:`.engines` (images to other nodes),
:mod:`.site` (network, rule, route) and :mod:`.placement` (where the daemon runs), :mod:`.logs`.
"""

from __future__ import annotations

from faasd.providers.swarm.client import map_exceptions
from faasd.providers.swarm.provider import DEFAULT_IMAGE, SwarmProvider, SwarmStatistics

__all__ = ["DEFAULT_IMAGE", "SwarmProvider", "SwarmStatistics", "map_exceptions"]
