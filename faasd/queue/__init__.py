"""Async invocations, as OpenFaaS's ``/async-function/*``: a durable queue of calls in SQLite, the
workers that run them, and the callbacks that carry their answers (docs/async.md).

* ``route.py`` -- the ASGI route that accepts a call (202 once it is on disk);
* ``queue.py`` -- the lines of calls per function, the dispatcher and the workers, retries, bounds;
* ``worker.py`` -- how a worker invokes through the gateway's invoke path and keeps the answer;
* ``callback.py`` -- which callback URLs and addresses are allowed, and the POST itself;
* ``settings.py`` -- per-function concurrency and retries from labels (pure);
* ``store.py``, ``writer.py`` -- ``queue.db`` and the task that commits to it in batches.
"""

from __future__ import annotations

from faasd.queue.queue import AsyncQueue as AsyncQueue
from faasd.queue.queue import FunctionQueueFull as FunctionQueueFull
from faasd.queue.queue import QueueFull as QueueFull
from faasd.queue.queue import QueueLimits as QueueLimits
from faasd.queue.queue import QueueStats as QueueStats
from faasd.queue.route import AsyncRoute as AsyncRoute
from faasd.queue.settings import QueueDefaults as QueueDefaults
from faasd.queue.settings import QueueSettings as QueueSettings
from faasd.queue.store import QueueDb as QueueDb

__all__ = [
    "AsyncQueue",
    "AsyncRoute",
    "FunctionQueueFull",
    "QueueDb",
    "QueueDefaults",
    "QueueFull",
    "QueueLimits",
    "QueueSettings",
    "QueueStats",
]
