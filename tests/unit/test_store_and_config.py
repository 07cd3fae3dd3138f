"""The SQLite store (durability across reopen, a killed writer) and the daemon config precedence."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from faasd.config import ConfigError, DaemonConfig, default_state_dir
from faasd.errors import StateError
from faasd.providers.types import FunctionSpec
from faasd.store import AsyncStore, Store, UnreadableFunction


def spec(name: str = "echo", **extra: object) -> FunctionSpec:
    return FunctionSpec.from_json({"service": name, "envProcess": "cat", **extra})


def test_functions_survive_reopen(tmp_path):
    path = str(tmp_path / "faasd.db")
    store = Store.open(path)
    first = store.put_function(spec(envVars={"a": "1"}), 2)
    store.put_function(spec("other"), 1)
    assert store.set_replicas("echo", 3)
    assert not store.set_replicas("missing", 3)
    store.close()
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    reopened = Store.open(path)
    functions = {stored.spec.name: stored for stored in reopened.list_functions()}
    assert functions["echo"].replicas == 3
    assert functions["echo"].spec.env_vars == {"a": "1"}
    assert functions["echo"].created_at == first.created_at
    assert reopened.delete_function("other") and not reopened.delete_function("other")
    assert [stored.spec.name for stored in reopened.list_functions()] == ["echo"]


def test_replace_keeps_created_at(tmp_path):
    store = Store.open(str(tmp_path / "db"))
    first = store.put_function(spec(), 1)
    second = store.put_function(spec(envVars={"b": "2"}), 1)
    assert second.created_at == first.created_at
    assert second.updated_at >= first.updated_at


def test_secrets(tmp_path):
    store = Store.open(str(tmp_path / "db"))
    assert store.put_secret("key", b"v1") is True
    assert store.put_secret("key", b"v2") is False
    assert store.get_secret("key") == b"v2"
    assert store.list_secrets() == ["key"]
    assert store.delete_secret("key") and store.get_secret("key") is None


def test_add_and_replace_secret_change_only_what_they_say(tmp_path):
    store = Store.open(str(tmp_path / "db"))
    assert store.add_secret("key", b"v1") is True
    assert store.add_secret("key", b"v2") is False  # Exists: left unchanged.
    assert store.get_secret("key") == b"v1"
    assert store.replace_secret("key", b"v3") is True and store.get_secret("key") == b"v3"
    assert store.replace_secret("missing", b"x") is False and store.get_secret("missing") is None


def test_unreadable_rows_are_reported_apart(tmp_path):
    """One bad row (hand-edited, corrupted, refused by a newer validation) must not stop the others."""
    path = str(tmp_path / "db")
    store = Store.open(path)
    store.put_function(spec("good"), 2)
    now = time.time()
    rows = [
        ("badenv", json.dumps({"service": "badenv", "envProcess": "cat", "envVars": {"A=B": "x"}}), 1),
        ("notjson", "{nope", 3),
        ("renamed", json.dumps({"service": "other", "envProcess": "cat"}), 1),
        ("badcount", json.dumps({"service": "badcount", "envProcess": "cat"}), "many"),
        ("a.b", json.dumps({"service": "a.b", "envProcess": "cat"}), 1),  # Deployed before names lost dots.
    ]
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA ignore_check_constraints=ON")
        for name, text, replicas in rows:
            raw.execute("INSERT INTO functions VALUES (?, ?, ?, ?, ?)", (name, text, replicas, now, now))
    readable, unreadable = store.load_functions()
    assert [stored.spec.name for stored in readable] == ["good"] == [s.spec.name for s in store.list_functions()]
    problems = {row.name: row for row in unreadable}
    assert set(problems) == {"badenv", "notjson", "renamed", "badcount", "a.b"}
    assert "'A=B'" in problems["badenv"].error and problems["badenv"].replicas == 1
    assert problems["notjson"] == UnreadableFunction("notjson", 3, problems["notjson"].error)
    assert "not valid JSON" in problems["notjson"].error
    assert "'other'" in problems["renamed"].error
    assert "replicas" in problems["badcount"].error and problems["badcount"].replicas == 0
    assert "service 'a.b' may not contain '.'" in problems["a.b"].error


@pytest.mark.parametrize("kind", ["garbage", "directory", "newer-schema"])
def test_an_unusable_database_is_a_state_error_naming_it(tmp_path, kind):
    path = tmp_path / "faasd.db"
    if kind == "garbage":
        path.write_bytes(b"garbage" * 1000)
    elif kind == "directory":
        path.mkdir()
    else:
        with sqlite3.connect(path) as raw:
            raw.execute("PRAGMA user_version=99")
    with pytest.raises(StateError) as info:
        Store.open(str(path))
    assert str(path) in info.value.message and "\n" not in info.value.message


async def test_async_store_errors_are_state_errors(tmp_path):
    path = tmp_path / "db"
    store = AsyncStore(Store.open(str(path)))
    await store.put_function(spec(), 1)
    with sqlite3.connect(path) as raw:  # Another writer holds the database past the busy timeout...
        raw.execute("BEGIN EXCLUSIVE")
        store.sync._db.execute("PRAGMA busy_timeout=50")
        with pytest.raises(StateError) as info:
            await store.put_function(spec("other"), 1)
    assert str(path) in info.value.message and "locked" in info.value.message
    await store.aclose()


def test_committed_write_survives_a_killed_process(tmp_path):
    """A deploy acknowledged before the process was SIGKILLed is there after reopening."""
    path = str(tmp_path / "db")
    code = (
        f"import os, signal, sys; sys.path.insert(0, {os.getcwd()!r})\n"
        "from faasd.store import Store; from faasd.providers.types import FunctionSpec\n"
        f"s = Store.open({path!r})\n"
        "s.put_function(FunctionSpec.from_json({'service': 'kept', 'envProcess': 'cat'}), 4)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False)
    assert result.returncode == -9
    stored = Store.open(path).get_function("kept")
    assert stored is not None and stored.replicas == 4


async def test_async_store_runs_off_the_event_loop(tmp_path):
    store = AsyncStore(Store.open(str(tmp_path / "db")))
    await store.put_function(spec(), 1)
    assert [f.spec.name for f in await store.list_functions()] == ["echo"]
    await store.aclose()


def test_config_precedence_flags_env_file(tmp_path):
    file = tmp_path / "faasd.toml"
    file.write_text('port = 9000\nprovider = "swarm"\nupstream_timeout = "90s"\nbind = "0.0.0.0"\n')
    config = DaemonConfig.load(
        file=str(file),
        env={"FAASD_PORT": "9100", "FAASD_PROVIDER": "local", "HOME": str(tmp_path)},
        flags={"port": 9200, "bind": None},
    )
    assert config.port == 9200  # flag beats env beats file
    assert config.provider == "local"  # env beats file
    assert config.upstream_timeout_s == 90.0  # file beats default
    assert config.bind == "0.0.0.0"
    assert config.state_dir == str(tmp_path / ".local" / "state" / "faasd")


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        ("prot = 1\n", {}, "unknown key 'prot'"),
        ("port = [\n", {}, "not valid TOML"),
        ("", {"FAASD_PORT": "http"}, "invalid port='http' (from $FAASD_PORT)"),
        ("provider = 'k8s'\n", {}, "invalid provider='k8s'"),
        ("upstream_timeout = 'soon'\n", {}, "invalid upstream_timeout"),
        ("header_timeout = 0\n", {}, "invalid header_timeout=0"),
        ("", {"FAASD_READ_TIMEOUT": "-1s"}, "invalid read_timeout='-1s' (from $FAASD_READ_TIMEOUT)"),
        ("keep_alive_timeout = nan\n", {}, "invalid keep_alive_timeout"),
        ("max_connections = 0\n", {}, "invalid max_connections=0"),
        ("", {"FAASD_MAX_CONNECTIONS": "many"}, "invalid max_connections='many'"),
        ("max_json_size = '1 lot'\n", {}, "invalid max_json_size"),
        ("max_header_size = 0\n", {}, "invalid max_header_size=0"),
        ("write_timeout = inf\n", {}, "invalid write_timeout"),
        ("async_concurrency = 0\n", {}, "invalid async_concurrency=0"),
        ("", {"FAASD_ASYNC_ATTEMPTS": "101"}, "invalid async_attempts='101'"),
        ("async_retry_wait = '2m'\nasync_retry_max_wait = '1m'\n", {}, "async_retry_max_wait (60s) is below"),
        ("async_callback_hosts = 7\n", {}, "invalid async_callback_hosts=7"),
        ("async_callback_hosts = ['hooks.example.com', 'http://x/']\n", {}, "'http://x/' is not a host name"),
    ],
)
def test_config_errors_name_key_and_source(tmp_path, content, env, message):
    file = tmp_path / "faasd.toml"
    file.write_text(content)
    with pytest.raises(ConfigError) as info:
        DaemonConfig.load(file=str(file), env=env)
    assert message in str(info.value)


def test_client_limits_have_defaults_and_keys(tmp_path):
    defaults = DaemonConfig.load(env={"HOME": str(tmp_path)})
    assert (defaults.header_timeout_s, defaults.read_timeout_s, defaults.keep_alive_timeout_s) == (10, 10, 75)
    assert (defaults.write_timeout_s, defaults.max_connections) == (30, 1024)
    assert (defaults.max_json_bytes, defaults.max_header_bytes) == (1024 * 1024, 16 * 1024)
    config = DaemonConfig.load(
        env={
            "HOME": str(tmp_path),
            "FAASD_HEADER_TIMEOUT": "2s",
            "FAASD_READ_TIMEOUT": "500ms",
            "FAASD_KEEP_ALIVE_TIMEOUT": "1m",
            "FAASD_WRITE_TIMEOUT": "5",
            "FAASD_MAX_CONNECTIONS": "64",
            "FAASD_MAX_JSON_SIZE": "64k",
            "FAASD_MAX_HEADER_SIZE": "8k",
        }
    )
    assert (config.header_timeout_s, config.read_timeout_s, config.keep_alive_timeout_s) == (2, 0.5, 60)
    assert (config.write_timeout_s, config.max_connections) == (5, 64)
    assert (config.max_json_bytes, config.max_header_bytes) == (64 * 1024, 8 * 1024)


def test_async_keys_have_defaults_and_read_every_form(tmp_path):
    defaults = DaemonConfig.load(env={"HOME": str(tmp_path)})
    assert (defaults.async_concurrency, defaults.async_queue_size, defaults.async_queue_total) == (4, 1000, 10_000)
    assert (defaults.async_attempts, defaults.async_retry_wait_s, defaults.async_retry_max_wait_s) == (10, 1, 60)
    assert (defaults.async_callback_attempts, defaults.async_callback_timeout_s) == (10, 10)
    assert str(defaults.async_callback_hosts) == "(loopback only)"
    file = tmp_path / "faasd.toml"
    file.write_text("async_callback_hosts = ['hooks.example.com', '10.0.0.0/8']\nasync_max_stored_size = '1g'\n")
    config = DaemonConfig.load(file=str(file), env={"HOME": str(tmp_path), "FAASD_ASYNC_CONCURRENCY": "9"})
    assert str(config.async_callback_hosts) == "hooks.example.com,10.0.0.0/8"
    assert (config.async_concurrency, config.async_max_stored_bytes) == (9, 1024**3)
    from_env = DaemonConfig.load(env={"HOME": str(tmp_path), "FAASD_ASYNC_CALLBACK_HOSTS": "*"})
    assert from_env.async_callback_hosts.any_host


def test_state_dir_defaults():
    assert default_state_dir({"STATE_DIRECTORY": "/var/lib/faasd"}) == "/var/lib/faasd"
    assert default_state_dir({"XDG_STATE_HOME": "/x", "HOME": "/h"}) == "/x/faasd"
    assert default_state_dir({"HOME": "/h"}) == "/h/.local/state/faasd"
