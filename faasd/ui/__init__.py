"""The web UI at ``/ui/``: static pages that drive the daemon's own APIs from the browser.

The daemon serves a handful of files -- HTML, small vanilla JavaScript modules, CSS, an SVG icon -- from
``faasd/ui/static/`` inside the package (so inside ``dist/faasd.pyz``), read once with
:mod:`importlib.resources` when the daemon starts: no build step, no CDN, nothing read from the
filesystem at run time. The pages keep no state on the server: everything they show comes from the
APIs every client uses (``/system/*`` with the admin's basic-auth credentials, ``/metrics``,
``/function/*``, ``/api/*``), polled every few seconds or streamed (``/system/logs?follow=true``).

Why this is safe to serve (docs/ui.md says the same for users):

* The files are public -- the same for every daemon of this version, like ``/openapi.json`` -- and
  hold no data. The data is behind the same credentials and the same failed-login throttle as
  ``/system/*`` because it *is* ``/system/*``: the login form only checks the password with
  ``GET /system/info``.
* CSRF: the password lives in the tab's ``sessionStorage`` and is sent by the page's own script as an
  ``Authorization`` header on same-origin ``fetch`` calls made with ``credentials: "omit"``; the
  browser never stores it (no cookie, no HTTP-auth cache), so a request another site makes carries no
  credentials at all. Writes also need ``Content-Type: application/json`` (``/system/*``'s rule), which
  a cross-site form cannot send and a cross-site ``fetch`` can only send after a CORS preflight the
  daemon never answers with permission.
* XSS: a strict Content-Security-Policy (:data:`faasd.ui.route.CSP`: scripts, styles and fetches from
  this origin only, no inline script or style, no framing) on every ``/ui/`` answer, and the pages put
  what they show into the DOM as text, never as HTML.
"""

from __future__ import annotations

from faasd.ui.route import UiRoute as UiRoute

__all__ = ["UiRoute"]
