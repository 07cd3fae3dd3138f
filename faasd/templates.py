"""Function templates: ``faasd new NAME --lang python|python-http|bash`` and the ``lang:`` of stack.yml.

A template is a few files for the function's directory plus the watchdog settings that run them.
The same directory deploys on every backend: the local backend unpacks it (``--handler``) and installs
``requirements.txt`` into its ``.packages``; ``faasd build DIR`` bakes it (and its requirements) into an
image for Swarm. Python templates use the watchdog's python mode (pre-started workers, no process
start per call); ``bash`` uses fork mode.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["TEMPLATES", "Template", "scaffold", "stack_entry"]


@dataclass(frozen=True, slots=True)
class Template:
    language: str
    description: str
    files: Mapping[str, str]
    environment: Mapping[str, str] = field(default_factory=dict)
    fprocess: str = ""


_PYTHON_HANDLER = '''\
"""{name}: a faasd function (python mode: imported once per worker, handle() runs per call)."""


def handle(req: str) -> str:
    """The request body comes in as text; what you return is the answer.

    Return a str (text), bytes, a dict or list (JSON), or (body, status). Raise to answer 500.
    """
    return f"Hello from {name}! You said: {{req}}"
'''

_PYTHON_HTTP_HANDLER = '''\
"""{name}: a faasd function with the OpenFaaS python3-http interface (python mode)."""


def handle(event, context):
    """event.body (bytes), event.headers (dict), event.method, event.path, event.query (dict).

    Return {{"statusCode": ..., "body": ..., "headers": {{...}}}}; a dict or list body is sent as JSON.
    """
    return {{
        "statusCode": 200,
        "body": {{"function": "{name}", "method": event.method, "path": event.path, "bytes": len(event.body)}},
        "headers": {{"X-Function": "{name}"}},
    }}
'''

_BASH_HANDLER = """\
#!/bin/sh
# {name}: a faasd function (fork mode: this script runs once per call).
# The request body is on stdin; what you print is the answer; a non-zero exit answers 500.
# Request details are in the environment: $Http_Method, $Http_Path, $Http_Query, $Http_User_Agent, ...
set -eu
body=$(cat)
echo "Hello from {name}! You sent ${{#body}} bytes with $Http_Method."
"""

_REQUIREMENTS = "# One requirement per line (pip format); installed into this function's own .packages\n"

TEMPLATES: dict[str, Template] = {
    "python": Template(
        language="python",
        description="handle(req) -> str/bytes/dict; python mode (warm workers)",
        files={"handler.py": _PYTHON_HANDLER, "requirements.txt": _REQUIREMENTS},
        environment={"mode": "python", "handler": "handler.py"},
    ),
    "python-http": Template(
        language="python-http",
        description="handle(event, context) -> {statusCode, body, headers}; python mode (warm workers)",
        files={"handler.py": _PYTHON_HTTP_HANDLER, "requirements.txt": _REQUIREMENTS},
        environment={"mode": "python", "handler": "handler.py"},
    ),
    "bash": Template(
        language="bash",
        description="a shell script per call (fork mode): stdin in, stdout out",
        files={"handler.sh": _BASH_HANDLER},
        fprocess="sh handler.sh",
    ),
}


def stack_entry(name: str, template: Template, handler_dir: str) -> str:
    """The stack.yml lines that deploy the scaffolded function."""
    lines = [f"  {name}:", f"    lang: {template.language}", f"    handler: ./{handler_dir}"]
    if template.fprocess:
        lines.append(f"    fprocess: {template.fprocess}")
    return "\n".join(lines) + "\n"


def scaffold(name: str, language: str, directory: str) -> list[str]:
    """Write the template's files into ``directory/name``; return the paths written.

    Raises:
        ValueError: unknown language, or the directory exists and is not empty.
    """
    template = TEMPLATES.get(language)
    if template is None:
        raise ValueError(f"unknown language {language!r}; use one of {', '.join(TEMPLATES)}")
    target = os.path.join(directory, name)
    if os.path.isdir(target) and os.listdir(target):
        raise ValueError(f"{target} exists and is not empty")
    os.makedirs(target, exist_ok=True)
    written = []
    for file_name, text in template.files.items():
        path = os.path.join(target, file_name)
        with open(path, "w", encoding="utf-8") as file:
            file.write(text.format(name=name))
        if file_name.endswith(".sh"):
            os.chmod(path, 0o755)
        written.append(path)
    return written
