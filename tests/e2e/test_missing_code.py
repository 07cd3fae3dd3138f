"""A local function whose code never came (faas-cli deploys a stack file's ``lang``/``handler`` function
without its handler folder) is a 400 at deploy naming what to do -- not a 500 from the replica at call time.

First with the deploy faas-cli sends (its language template's ``fprocess``, no ``handlerArchive``), then
with the real faas-cli and a template folder, then ``faasd deploy -f`` of the same stack file, which
uploads the folder and works.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

from tests.compat.conftest import faas_cli_binary
from tests.daemon_fixtures import PASSWORD, MakeCli, StartDaemon

UPLOAD_ADVICE = "faas-cli never uploads a handler folder): deploy with 'faasd deploy -f stack.yml'"


def test_a_deploy_without_the_code_its_command_runs_is_a_400(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    cases = {
        "lang": ({"envProcess": "python3 index.py", "image": "hello:latest"}, "runs index.py"),
        "pymode": ({"envVars": {"mode": "python"}}, "mode=python runs handle() from handler.py"),
        "binary": ({"envProcess": "./handler"}, "envProcess runs ./handler"),
    }
    with daemon.client() as client:
        for name, (fields, reason) in cases.items():
            answer = client.post("/system/functions", json={"service": name, **fields})
            assert answer.status_code == 400, answer.text
            assert reason in answer.text and UPLOAD_ADVICE in answer.text, answer.text
            assert len(answer.text) <= 301, answer.text  # One line, as every error the gateway writes.
        assert client.get("/system/functions").json() == []
        assert client.post("/function/lang", content=b"x").status_code == 404  # Not deployed at all.


def test_faas_cli_deploy_of_a_lang_function_says_to_use_faasd_deploy(
    start_daemon: StartDaemon, faasd_cli: MakeCli, tmp_path: Path
) -> None:
    binary = faas_cli_binary()
    daemon = start_daemon()
    project = tmp_path / "project"
    (project / "template" / "python3").mkdir(parents=True)  # What 'faas-cli template pull' leaves.
    (project / "template" / "python3" / "template.yml").write_text("language: python3\nfprocess: python3 index.py\n")
    (project / "hello").mkdir()
    (project / "hello" / "handler.py").write_text("def handle(req):\n    return 'hi ' + req\n")
    (project / "stack.yml").write_text(
        textwrap.dedent(
            """\
            version: 1.0
            provider:
              name: openfaas
            functions:
              hello:
                lang: python3
                handler: ./hello
                image: hello:latest
            """
        )
    )
    home = tmp_path / "faas-cli-home"
    home.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "OPENFAAS_URL": daemon.url}

    def faas(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binary), *args], input=stdin, env=env, cwd=project, capture_output=True, text=True, timeout=60
        )

    assert faas("login", "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
    refused = faas("deploy", "-f", "stack.yml")
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "400" in output, output
    assert "runs index.py" in output and UPLOAD_ADVICE in output, output

    cli = faasd_cli(daemon)
    cli.run("deploy", "-f", "stack.yml", cwd=project).ok()  # Uploads ./hello; python3 is faasd's python template.
    assert cli.run("invoke", "hello", stdin=b"there").ok().out == "hi there"
    assert os.path.isfile(project / "hello" / "handler.py")
