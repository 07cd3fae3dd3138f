"""The ``memory`` backend: functions whose replicas are HTTP servers inside the daemon's own trio loop.

For tests and embedding, not for ``faasd up`` (:func:`faasd.providers.load_provider` does not offer
it): the gateway, :class:`~faasd.service.FunctionService` and the autoscaler can be driven in one
process, with no process to start and nothing on disk, while every call still crosses a real socket.
It passes the provider conformance suite (tests/providers/conformance.py) like local and Swarm.

What is real: each replica listens on its own 127.0.0.1 port and speaks HTTP/1.1 through faasd's own
parser; it is probed ready with the shared health probe and published to the endpoint registry only
then; scaling and rolling updates follow the local backend's plan (an update never lowers the number
of ready replicas); replicas are unpublished before they stop, and stopping ones drain; secrets are
looked up at deploy (a missing one is a 400); the call token is required as a watchdog requires it;
logs go to a per-function log book with follow.

What is emulated, and how (:mod:`.replica` says it precisely): a function's *program* -- the first
word of its ``envProcess`` -- is a Python callable, run once per call the way fork mode runs a
process: ``cat``, ``env``, ``echo``, ``sleep``, ``false``, or what the provider was given. Nothing is
sandboxed, and the watchdog's timeouts and limits are not applied.
"""

from __future__ import annotations

from faasd.providers.memory.provider import MemoryProvider
from faasd.providers.memory.replica import PROGRAMS, Answer, Call, Program, ReplicaServer

__all__ = ["PROGRAMS", "Answer", "Call", "MemoryProvider", "Program", "ReplicaServer"]
