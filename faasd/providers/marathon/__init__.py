"""The Marathon backend (``faasd up --provider marathon --marathon-url URL``): one Marathon app per function.

Split by concern, each module pure where it can be:

* :mod:`.appdef` -- FunctionSpec <-> Marathon app definition, ids, labels, the call token (pure);
* :mod:`.view` -- an app's status, failure reason and ready endpoints (pure);
* :mod:`.client` -- Marathon's v2 REST API over httpx: errors, deployments, the event stream;
* :mod:`.discovery` -- events plus periodic re-lists, publishing endpoints to the registry;
* :mod:`.provider` -- the lifecycle: deploy, update, scale, remove, status, waiting for deployments;

What a command task runs on a Mesos agent before it becomes the watchdog is not here but in
:mod:`faasd.watchdog.marathon`: it runs on every such replica, so it must not pay for this package's
imports (httpx, trio). docs/marathon.md says how to use the backend and what it does and does not do.
"""
