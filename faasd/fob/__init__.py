"""Flock of Birds on faasd: upload a Python snippet defining ``callme``, get an id, call it with parameters.

The API of the seed (``POST /api/gen``, ``GET /api/call/{id}?k:v,...``, ``GET /api/stats``, and the
internal ``/api/meta/{id}`` and ``/api/cs/{id}``), with each snippet run as the faasd function
``fob-<id>`` in warm python mode, sandboxed like any function, and kept in SQLite (docs/fob.md).

* :mod:`faasd.fob.args` -- the ``k:v,k:v`` argument list (pure);
* :mod:`faasd.fob.source` -- checking an upload without running it (pure);
* :mod:`faasd.fob.checkproc` -- ``faasd _checksource``: that check, in a child process of the daemon;
* :mod:`faasd.fob.checker` -- the daemon's side of it;
* :mod:`faasd.fob.driver` -- the handler that runs a snippet in its replica (stdlib only, copied there);
* :mod:`faasd.fob.spec` -- a snippet as a function spec (pure);
* :mod:`faasd.fob.snippets` -- the snippets in the daemon: store, functions, start-up;
* :mod:`faasd.fob.routes` -- ``/api/*`` as raw ASGI;
* :mod:`faasd.fob.openapi` -- their part of ``/openapi.json``.

This package's face re-exports only the pure parts: ``faasd _checksource`` imports it in a process of
its own and must start fast. The daemon imports :class:`~faasd.fob.routes.FobRoutes` and
:class:`~faasd.fob.snippets.SnippetService` from their modules.
"""

from __future__ import annotations

from faasd.fob.args import ArgumentError as ArgumentError
from faasd.fob.args import parse_call_args as parse_call_args
from faasd.fob.source import LANGUAGES as LANGUAGES
from faasd.fob.source import SourceError as SourceError
from faasd.fob.source import check_source as check_source

__all__ = ["LANGUAGES", "ArgumentError", "SourceError", "check_source", "parse_call_args"]
