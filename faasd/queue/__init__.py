"""Async invocations, as OpenFaaS's ``/async-function/*``: a durable queue of calls in SQLite, the
workers that run them, and the callbacks that carry their answers (docs/async.md).

The package itself imports nothing, so that the config (read by the CLI too) can use ``hosts.py``
without loading the queue; import from the modules.

* ``route.py`` -- the ASGI route that accepts a call (202 once it is on disk);
* ``queue.py`` -- the lines of calls per function, the dispatcher and the workers, retries, bounds;
* ``worker.py`` -- how a worker invokes through the gateway's invoke path and keeps the answer;
* ``callback.py`` -- which callback URLs and addresses are allowed, and the POST itself;
* ``hosts.py`` -- ``async_callback_hosts``: where callbacks may go (pure: the config reads it);
* ``settings.py`` -- per-function concurrency and retries from labels (pure);
* ``store.py``, ``writer.py`` -- ``queue.db`` and the task that commits to it in batches.
"""
