"""The environment ``pip install`` runs with when a function's ``requirements.txt`` is installed.

pip runs code the function's author chose (``setup.py``, a PEP 517 build backend), so it must not
inherit the daemon's environment: ``FAASD_PASSWORD`` would be one ``os.environ`` read away, and so
would anything else the service manager or the operator put there. It gets only what pip itself
reads: where programs are (``PATH``), a home and temp dir for its cache and config, the locale, TLS
trust settings, proxies, and pip's own ``PIP_*`` settings (index URL, certificates, timeouts).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["PIP_ENV_NAMES", "pip_environment"]

PIP_ENV_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "XDG_CONFIG_DIRS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
    }
)
"""Variables passed through as they are, when set."""

_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def pip_environment(env: Mapping[str, str]) -> dict[str, str]:
    """What of ``env`` (the daemon's environment) pip may see: see the module docstring."""
    clean = {name: value for name, value in env.items() if name in PIP_ENV_NAMES or name.startswith("PIP_")}
    clean.setdefault("PATH", _DEFAULT_PATH)
    return clean
