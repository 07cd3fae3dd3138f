"""The command line end to end: ``python3 dist/faasd.pyz <command>`` against a real ``faasd up``.

Every command through its happy path, piped output formats (tab-separated, ``--json``), and the error
contract -- a non-zero exit and one clear line on stderr, never a traceback -- for a daemon that is down,
a wrong password, unknown functions, bad names and broken stack files.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from faasd import __version__
from tests.daemon_fixtures import Cli, Daemon, MakeCli, StartDaemon, closed_port_url
from tests.helpers import free_port, wait_for


def _daemon_and_cli(start_daemon: StartDaemon, faasd_cli: MakeCli, **env: str) -> tuple[Daemon, Cli]:
    daemon = start_daemon(**env)
    return daemon, faasd_cli(daemon)


def _write_stack(directory: Path, text: str) -> Path:
    path = directory / "stack.yml"
    path.write_text(textwrap.dedent(text))
    return path


# -- status, version ------------------------------------------------------------------------------


def test_status_shows_a_healthy_daemon_then_its_functions(start_daemon, faasd_cli):
    daemon, cli = _daemon_and_cli(start_daemon, faasd_cli)
    fields = cli.run("status").ok().fields()
    assert fields["Status"] == "healthy"
    assert fields["Backend"].startswith("local")
    assert fields["Functions"] == "0"
    assert fields["faasd"] == f"{__version__} at {daemon.url}"

    cli.run("deploy", "echo", "--fprocess", "cat").ok()
    result = cli.run("status").ok()
    assert result.fields()["Functions"] == "1"
    assert ["echo", "1", "1", "0", "cat", "deployed"] in result.rows()


def test_status_of_one_function_explains_the_autoscaler(start_daemon, faasd_cli):
    _, cli = _daemon_and_cli(start_daemon, faasd_cli)
    cli.run("deploy", "echo", "--fprocess", "cat", "--label", "com.openfaas.scale.max=3").ok()
    fields = cli.run("status", "echo").ok().fields()
    assert fields["Function"] == "echo"
    assert fields["Replicas"] == "1/1 ready"
    assert "max 3" in fields["Scaling"]
    assert fields["Why"], fields


def test_status_when_no_daemon_runs_says_how_to_start_one(faasd_cli):
    line = faasd_cli(FAASD_URL=closed_port_url()).run("status").error_line()
    assert "not running" in line and "faasd up" in line, line


def test_commands_when_no_daemon_runs_fail_with_one_line(faasd_cli):
    cli = faasd_cli(FAASD_URL=closed_port_url(), FAASD_PASSWORD="x")
    for args in (("list",), ("describe", "f"), ("deploy", "f", "--fprocess", "cat"), ("scale", "f", "2")):
        line = cli.run(*args).error_line()
        assert "127.0.0.1" in line, (args, line)


def test_a_wrong_password_is_refused_with_a_hint(start_daemon, faasd_cli):
    daemon, _ = _daemon_and_cli(start_daemon, faasd_cli)
    cli = faasd_cli(daemon, FAASD_PASSWORD="wrong")
    assert "unauthorized" in cli.run("list").error_line()
    line = cli.run("status").error_line()
    assert "credentials were refused" in line and "FAASD_PASSWORD" in line, line


def test_version_names_the_cli_and_the_daemon(start_daemon, faasd_cli):
    daemon, cli = _daemon_and_cli(start_daemon, faasd_cli)
    out = cli.run("version").ok().out
    assert f"faasd {__version__}" in out
    assert f"gateway {daemon.url}: faasd {__version__}, backend local" in out
    assert cli.run("--version").ok().out.strip().endswith(__version__)


# -- deploy, invoke, list, describe, rm -----------------------------------------------------------


def test_deploy_invoke_list_describe_rm(start_daemon, faasd_cli):
    daemon, cli = _daemon_and_cli(start_daemon, faasd_cli)
    deployed = cli.run("deploy", "echo", "--fprocess", "cat").ok()
    assert f"Deployed echo (ready). URL: {daemon.url}/function/echo" in deployed.err

    assert cli.run("invoke", "echo", stdin=b"hello\x00world").ok().stdout == b"hello\x00world"
    assert cli.run("list").ok().rows() == [["echo", "1", "1", "1", "cat"]]
    fields = cli.run("describe", "echo").ok().fields()
    assert fields["Status"] == "Ready" and fields["Process"] == "cat" and fields["Invocations"] == "1"
    assert fields["URL"] == f"{daemon.url}/function/echo"

    assert "Removed echo" in cli.run("rm", "echo").ok().err
    assert cli.run("list").ok().rows() == []
    gone = cli.run("invoke", "echo")
    assert gone.code == 1 and "Traceback" not in gone.err
    assert gone.err.splitlines() == ["Function not found: echo", "Error: function echo answered 404"]


def test_deploy_sets_env_labels_annotations_and_a_handler_dir(start_daemon, faasd_cli, tmp_path):
    _, cli = _daemon_and_cli(start_daemon, faasd_cli)
    handler = tmp_path / "fn"
    handler.mkdir()
    (handler / "greet.sh").write_text('read name; echo "$GREETING, $name"\n')
    cli.run(
        "deploy",
        "greet",
        "--fprocess",
        "sh greet.sh",
        "--handler",
        str(handler),
        "--env",
        "GREETING=Hello",
        "--label",
        "team=core",
        "--annotation",
        "topic=demo",
    ).ok()
    assert cli.run("invoke", "greet", stdin=b"Ada\n").ok().out == "Hello, Ada\n"
    document = cli.run("describe", "greet", "--json").ok().json()
    assert document["envVars"] == {"GREETING": "Hello"}
    assert document["labels"]["team"] == "core"
    assert document["annotations"]["topic"] == "demo"


def test_deploy_replaces_an_existing_function(start_daemon, faasd_cli):
    _, cli = _daemon_and_cli(start_daemon, faasd_cli)
    cli.run("deploy", "f", "--fprocess", "echo one").ok()
    assert cli.run("invoke", "f").ok().out == "one\n"
    cli.run("deploy", "f", "--fprocess", "echo two").ok()
    wait_for(lambda: cli.run("invoke", "f").ok().out == "two\n", 15.0, "the new version to answer")
    assert [row[0] for row in cli.run("list").ok().rows()] == ["f"]


def test_invoke_passes_method_headers_query_path_and_exits_1_on_an_error(start_daemon, faasd_cli):
    _, cli = _daemon_and_cli(start_daemon, faasd_cli)
    cli.run("deploy", "env", "--fprocess", "env").ok()
    out = cli.run(
        "invoke", "env", "-X", "GET", "-H", "X-Thing: v1", "-q", "a=1", "-q", "b=two", "--path", "sub/dir"
    ).ok()
    variables = dict(line.split("=", 1) for line in out.out.splitlines() if "=" in line)
    assert variables["Http_Method"] == "GET"
    assert variables["Http_X_Thing"] == "v1"
    assert variables["Http_Query"] == "a=1&b=two"
    assert variables["Http_Path"] == "/sub/dir"

    cli.run("deploy", "fails", "--fprocess", "sh -c 'echo broken-on-purpose >&2; exit 3'").ok()
    failed = cli.run("invoke", "fails", stdin=b"x")
    assert failed.code == 1 and "Traceback" not in failed.err
    assert "broken-on-purpose" in failed.err
    assert failed.err.rstrip().endswith("Error: function fails answered 500")


def test_bad_input_gets_one_clear_line(start_daemon, faasd_cli):
    _, cli = _daemon_and_cli(start_daemon, faasd_cli)
    assert "may only contain" in cli.run("deploy", "bad name", "--fprocess", "cat").error_line()
    assert "envProcess is required" in cli.run("deploy", "noproc").error_line()
    usage = cli.run("deploy", "f", "--fprocess", "cat", "--env", "novalue")  # click's usage error: exit 2
    assert usage.code == 2 and "Traceback" not in usage.err
    assert "Error: Invalid value for --env: 'novalue' is not KEY=VALUE" in usage.err
    assert "No such function: nope" in cli.run("describe", "nope").error_line()
    assert "nope" in cli.run("rm", "nope").error_line()
    assert "No such function: nope" in cli.run("scale", "nope", "2").error_line()
    assert cli.run("scale", "f", "-1").code == 2  # click's usage error
    assert "Traceback" not in cli.run("scale", "f", "-1").err


# -- scale, logs ----------------------------------------------------------------------------------


def test_scale_waits_for_the_replicas(start_daemon, faasd_cli):
    daemon, cli = _daemon_and_cli(start_daemon, faasd_cli)
    cli.run("deploy", "echo", "--fprocess", "cat").ok()
    assert "Scaled echo to 3" in cli.run("scale", "echo", "3").ok().err
    assert daemon.status("echo")["availableReplicas"] == 3
    status = cli.run("scale", "echo", "0", "--json").ok().json()
    assert status["availableReplicas"] == 0
    assert cli.run("describe", "echo").ok().fields()["Status"] == "Not ready"


def test_logs_prints_the_functions_stderr(start_daemon, faasd_cli):
    _, cli = _daemon_and_cli(start_daemon, faasd_cli)
    # combine_output=false: stderr goes to the replica's log instead of into the answer.
    cli.run("deploy", "talker", "--fprocess", "sh -c 'cat; echo said-something >&2'", "-e", "combine_output=false").ok()
    cli.run("invoke", "talker", stdin=b"x").ok()

    def logged() -> list[list[str]]:
        return [row for row in cli.run("logs", "talker").ok().rows() if "said-something" in row[-1]]

    rows = wait_for(logged, 10.0, "the function's stderr in faasd logs")
    timestamp, instance, _ = rows[0]
    assert instance.startswith("talker-") and timestamp.endswith("Z")
    assert len(cli.run("logs", "talker", "--tail", "1").ok().rows()) == 1
    lines = [json.loads(line) for line in cli.run("logs", "talker", "--json").ok().out.splitlines()]
    assert all(line["name"] == "talker" for line in lines)


def test_logs_follow_streams_new_lines(start_daemon, faasd_cli, tmp_path):
    _, cli = _daemon_and_cli(start_daemon, faasd_cli)
    cli.run("deploy", "talker", "--fprocess", "sh -c 'read w; echo heard-$w >&2'", "-e", "combine_output=false").ok()
    out = tmp_path / "follow.out"
    follower = cli.start("logs", "talker", "--follow", stdout=out)
    # Readiness: the follower printed the lines logged so far (the replica's start-up), so it is connected
    # before the call whose output it must see.
    wait_for(lambda: out.read_text().strip(), 10.0, lambda: f"logs --follow to print anything: {out.read_text()!r}")
    cli.run("invoke", "talker", stdin=b"late\n").ok()
    wait_for(lambda: "heard-late" in out.read_text(), 10.0, lambda: f"followed output: {out.read_text()!r}")
    assert follower.poll() is None, "logs --follow exited instead of waiting for more lines"


# -- stack files and up -f ------------------------------------------------------------------------


def test_deploy_from_a_stack_file(start_daemon, faasd_cli, tmp_path):
    _, cli = _daemon_and_cli(start_daemon, faasd_cli)
    (tmp_path / "shout").mkdir()
    (tmp_path / "shout" / "shout.sh").write_text("tr a-z A-Z\n")
    stack = _write_stack(
        tmp_path,
        """\
        version: 1.0
        provider:
          name: openfaas
        functions:
          shout:
            handler: ./shout
            fprocess: sh shout.sh
          count:
            lang: golang
            fprocess: wc -c
            labels:
              com.openfaas.scale.min: 2
        """,
    )
    result = cli.run("deploy", "-f", str(stack)).ok()
    assert "lang 'golang' of 'count' is not a faasd template" in result.err
    assert cli.run("invoke", "shout", stdin=b"quiet").ok().out == "QUIET"
    assert cli.run("invoke", "count", stdin=b"12345").ok().out.strip() == "5"
    rows = {row[0]: row for row in cli.run("list").ok().rows()}
    assert set(rows) == {"shout", "count"} and rows["count"][2] == "2"

    only = _write_stack(tmp_path, stack.read_text().replace("tr a-z A-Z", "rev"))
    (tmp_path / "shout" / "shout.sh").write_text("rev\n")
    cli.run("deploy", "-f", str(only), "shout").ok()
    wait_for(lambda: cli.run("invoke", "shout", stdin=b"abc\n").ok().out == "cba\n", 15.0, "the redeployed shout")


def test_broken_stack_files_are_one_line_with_the_place(faasd_cli, tmp_path):
    cli = faasd_cli(FAASD_URL=closed_port_url(), FAASD_PASSWORD="x")
    broken = tmp_path / "broken.yml"
    broken.write_text("functions:\n  a: [\n")
    assert cli.run("deploy", "-f", str(broken)).error_line().startswith(f"Error: {broken}:3: not valid YAML")
    no_dir = _write_stack(tmp_path, "functions:\n  a:\n    handler: ./missing\n    fprocess: cat\n")
    line = cli.run("deploy", "-f", str(no_dir)).error_line()
    assert f"{no_dir}:2: handler" in line and "missing of a is not a directory" in line, line
    assert "cannot read" in cli.run("deploy", "-f", str(tmp_path / "nope.yml")).error_line()
    assert "no function 'other' (has: a)" in cli.run("deploy", "-f", str(no_dir), "other").error_line()


def test_up_with_a_stack_file_deploys_it_once_up(start_daemon, faasd_cli, tmp_path):
    stack = _write_stack(tmp_path, "functions:\n  echo:\n    fprocess: cat\n  words:\n    fprocess: wc -w\n")
    daemon = start_daemon(args=("-f", str(stack)))
    daemon.wait_available("echo", 1)
    daemon.wait_available("words", 1)
    cli = faasd_cli(daemon)
    assert cli.run("invoke", "words", stdin=b"one two three").ok().out.strip() == "3"


def test_up_with_a_stack_file_and_a_daemon_already_running_only_deploys(start_daemon, faasd_cli, tmp_path):
    port = free_port()
    daemon = start_daemon(port=port)
    stack = _write_stack(tmp_path, "functions:\n  late:\n    fprocess: cat\n")
    cli = faasd_cli(daemon)
    result = cli.run("up", "-f", str(stack), "--port", str(port), "--state-dir", str(daemon.state_dir)).ok()
    assert "Deployed late (ready)" in result.err
    assert cli.run("invoke", "late", stdin=b"ok").ok().out == "ok"
    assert daemon.proc.poll() is None


def test_json_output_and_the_gateway_flag(start_daemon, faasd_cli):
    daemon = start_daemon()
    cli = faasd_cli(daemon, FAASD_URL=None)  # only --gateway says where the daemon is
    gateway = ("--gateway", daemon.url)
    cli.run(*gateway, "deploy", "echo", "--fprocess", "cat", "--json").ok()
    listed = cli.run(*gateway, "list", "--json").ok().json()
    assert [(f["name"], f["availableReplicas"], f["envProcess"]) for f in listed] == [("echo", 1, "cat")]
    status = cli.run(*gateway, "status", "--json").ok().json()
    assert status["running"] is True and status["healthy"] is True and status["gateway"] == daemon.url
    assert [f["name"] for f in status["functions"]] == ["echo"]
    assert cli.run(*gateway, "rm", "echo", "--json").ok().json() == {"removed": ["echo"]}
    down = faasd_cli(FAASD_URL=closed_port_url()).run("status", "--json")
    assert down.code == 1 and down.json()["running"] is False
