"""The ``faasd`` CLI where an OpenFaaS user reaches for faas-cli's habits: ``secret create|list|update|rm``
(values from a flag, a file or stdin), ``deploy --constraint/--readonly``, ``list -v``, ``logs --since 5m``,
``rm -f stack.yml``, ``new --lang python3``, and every ``faasd up`` key as a flag -- each against a real daemon.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.daemon_fixtures import CliResult, MakeCli, StartDaemon
from tests.helpers import wait_for


def test_secret_create_list_update_rm(start_daemon: StartDaemon, faasd_cli: MakeCli, tmp_path: Path) -> None:
    daemon = start_daemon()
    cli = faasd_cli(daemon)
    assert "Created secret token" in cli.run("secret", "create", "token", "--from-literal", "s3cret").ok().err
    (tmp_path / "key.pem").write_bytes(b"\n  -----KEY-----\n\n")
    cli.run("secret", "create", "key", "--from-file", str(tmp_path / "key.pem")).ok()
    cli.run("secret", "create", "piped", stdin=b"from-stdin\n").ok()
    cli.run("secret", "create", "spaced", "--no-trim", stdin=b" kept \n").ok()
    cli.run("secret", "create", "binary", "--from-file", str(_write(tmp_path / "bin", b"\xff\x00\xfe"))).ok()
    assert cli.run("secret", "list").ok().rows() == [["binary"], ["key"], ["piped"], ["spaced"], ["token"]]
    assert cli.run("secret", "list", "--json").ok().json()[0] == {"name": "binary", "namespace": "openfaas-fn"}

    # What a function reads is what was given (trimmed unless --no-trim); the values never leave the daemon.
    read_all = 'sh -c \'for s in token key piped spaced; do printf "[%s]" "$(cat $secret_mount_path/$s)"; done\''
    cli.run(
        "deploy", "reader", "--fprocess", read_all, *[f"--secret={s}" for s in ("token", "key", "piped", "spaced")]
    ).ok()
    assert cli.run("invoke", "reader").ok().out == "[s3cret][-----KEY-----][from-stdin][ kept ]"
    binary = "sh -c 'od -An -tx1 $secret_mount_path/binary'"
    cli.run("deploy", "binary-reader", "--fprocess", binary, "--secret", "binary").ok()
    assert cli.run("invoke", "binary-reader").ok().out.split() == ["ff", "00", "fe"]

    exists = cli.run("secret", "create", "token", "--from-literal", "again").error_line()
    assert "409" in exists and "exists already" in exists, exists
    cli.run("secret", "create", "token", "--from-literal", "replaced", "--replace").ok()
    cli.run("secret", "update", "piped", stdin=b"updated\n").ok()
    cli.run(
        "deploy", "reader", "--fprocess", read_all, *[f"--secret={s}" for s in ("token", "key", "piped", "spaced")]
    ).ok()
    assert cli.run("invoke", "reader").ok().out == "[replaced][-----KEY-----][updated][ kept ]"

    in_use = cli.run("secret", "rm", "token").error_line()
    assert "used by reader" in in_use, in_use
    assert "secret update nope" in cli.run("secret", "update", "nope", "--from-literal", "x").error_line()
    assert _usage_error(cli.run("secret", "create", "x", "--from-literal", "a", "--from-file", __file__), "not both")
    assert _usage_error(cli.run("secret", "create", "x", stdin=b"  \n"), "the secret's value is empty")
    cli.run("rm", "reader", "binary-reader").ok()
    cli.run("secret", "rm", "token", "key").ok()
    cli.run("secret", "remove", "piped").ok()  # faas-cli's name for it.
    assert cli.run("secret", "list").ok().rows() == [["binary"], ["spaced"]]


def _usage_error(result: CliResult, message: str) -> bool:
    """A usage error: exit 2, click's usage lines, then ``Error: ...message...`` -- no traceback."""
    assert result.code == 2 and "Traceback" not in result.err, result
    assert result.err.splitlines()[-1].startswith("Error: ") and message in result.err, result
    return True


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_deploy_constraint_readonly_and_list_verbose(start_daemon: StartDaemon, faasd_cli: MakeCli) -> None:
    daemon = start_daemon()
    cli = faasd_cli(daemon)
    placed = ("--constraint", "node.role==manager", "--constraint", "node.labels.disk==ssd", "--readonly")
    cli.run("deploy", "echo", "--fprocess", "cat", *placed).ok()
    status = daemon.status("echo")
    assert status["constraints"] == ["node.role==manager", "node.labels.disk==ssd"]
    assert status["readOnlyRootFilesystem"] is True
    assert cli.run("list").ok().rows() == [["echo", "0", "1", "1", "cat"]]
    (row,) = cli.run("list", "-v").ok().rows()
    assert row[:6] == ["echo", "0", "1", "1", "cat", "deployed"] and row[6].startswith("20"), row
    assert cli.run("list", "--verbose").ok().rows() == [row]


def test_logs_since_takes_a_duration_or_a_time(start_daemon: StartDaemon, faasd_cli: MakeCli) -> None:
    daemon = start_daemon()
    cli = faasd_cli(daemon)
    cli.run("deploy", "talker", "--fprocess", "sh -c 'read w; echo said-$w >&2'", "-e", "combine_output=false").ok()
    cli.run("invoke", "talker", stdin=b"early\n").ok()

    def said(*args: str) -> list[str]:
        """The words the function logged (``said-WORD`` on its stderr), oldest first."""
        return [
            word for row in cli.run("logs", "talker", *args).ok().rows() for word in re.findall(r"said-(\w+)", row[-1])
        ]

    wait_for(lambda: said("--since", "5m") == ["early"], 10.0, "the line within --since 5m")
    assert said("--since", "1h30m") == ["early"]
    assert said("--since", "2000-01-01T00:00:00Z") == ["early"]
    # A window back from now: the line leaves a 1 s window as it ages (the CLI's own start-up takes part
    # of that second, so the test waits for it rather than sleeping a fixed time).
    wait_for(lambda: said("--since", "1s") == [], 10.0, "the line to age out of --since 1s")
    assert said("--since", "1m") == ["early"]
    assert "since must be an RFC 3339 time" in cli.run("logs", "talker", "--since", "soon").error_line()


def test_rm_with_a_stack_file(start_daemon: StartDaemon, faasd_cli: MakeCli, tmp_path: Path) -> None:
    daemon = start_daemon()
    cli = faasd_cli(daemon)
    stack = tmp_path / "stack.yml"
    stack.write_text("functions:\n  one:\n    fprocess: cat\n  two:\n    fprocess: cat\n  three:\n    fprocess: cat\n")
    cli.run("deploy", "-f", str(stack)).ok()
    cli.run("deploy", "other", "--fprocess", "cat").ok()
    assert "Removed two" in cli.run("rm", "-f", str(stack), "two").ok().err
    assert sorted(row[0] for row in cli.run("list").ok().rows()) == ["one", "other", "three"]
    cli.run("rm", "-f", str(stack), "--json").error_line()  # "two" is gone already: one clear line.
    assert sorted(row[0] for row in cli.run("list").ok().rows()) == ["other", "three"]
    assert "no function 'nope'" in cli.run("rm", "-f", str(stack), "nope").error_line()
    assert _usage_error(cli.run("rm"), "give the functions to remove (NAME..., or -f stack.yml)")
    cli.run("deploy", "-f", str(stack)).ok()
    cli.run("rm", "-f", str(stack)).ok()
    assert [row[0] for row in cli.run("list").ok().rows()] == ["other"]


def test_new_with_openfaas_language_names(start_daemon: StartDaemon, faasd_cli: MakeCli, tmp_path: Path) -> None:
    daemon = start_daemon()
    cli = faasd_cli(daemon)
    cli.run("new", "hello", "--lang", "python3", cwd=tmp_path).ok()
    cli.run("new", "web", "--lang", "python3-http", cwd=tmp_path).ok()
    assert (tmp_path / "hello" / "handler.py").is_file() and (tmp_path / "web" / "handler.py").is_file()
    cli.run("deploy", "-f", "stack.yml", cwd=tmp_path).ok()
    assert cli.run("invoke", "hello", stdin=b"hi").ok().out == "Hello from hello! You said: hi"
    assert '"function": "web"' in cli.run("invoke", "web").ok().out
    assert _usage_error(cli.run("new", "x", "--lang", "cobol", cwd=tmp_path), "'python3', 'python3-http'")


def test_every_up_key_is_a_flag_and_takes_effect(start_daemon: StartDaemon, faasd_cli: MakeCli) -> None:
    # Among them the keys that were "no such option" before (config_keys() made them flags).
    daemon = start_daemon(args=("--upstream-timeout", "1s", "--max-body-size", "1k", "--max-json-size", "100"))
    cli = faasd_cli(daemon)
    cli.run("deploy", "slow", "--fprocess", "sh -c 'sleep 3; echo late'").ok()
    cli.run("deploy", "echo", "--fprocess", "cat").ok()
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        slow = client.post("/function/slow", content=b"x")
        assert slow.status_code == 502 and "within 1s" in slow.text, slow.text
        assert client.post("/function/echo", content=b"x" * 2048).status_code == 413
        big_json = client.post(
            "/system/secrets", json={"name": "s", "value": "v" * 200}, auth=("admin", daemon.env["FAASD_PASSWORD"])
        )
        assert big_json.status_code == 413, big_json.text
    bad = cli.run("up", "--swarm-route", "nowhere")
    assert "Invalid value for '--swarm-route'" in bad.err and bad.code == 2
    typo = cli.run("up", "--ready-timeout", "soon")
    assert "invalid ready_timeout='soon' (from --ready-timeout)" in typo.err and typo.code == 2
    help_text = cli.run("up", "--help").ok().out
    assert "--max-upstream-timeout DURATION" in help_text and "--swarm-pull / --no-swarm-pull" in help_text
