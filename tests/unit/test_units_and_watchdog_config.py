"""Value parsing (durations, sizes, booleans) and the watchdog's env config, without starting anything."""

from __future__ import annotations

import pytest

from faasd.units import parse_bool, parse_cpus, parse_duration, parse_size
from faasd.watchdog.config import ConfigError, WatchdogConfig


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10", 10.0),
        ("0.5", 0.5),
        ("0", 0.0),
        ("10s", 10.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("2us", 2e-6),
        (" 3s ", 3.0),
    ],
)
def test_durations(text: str, seconds: float):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "10x", "-1", "-1s", "s10", "1s2", "nan", "inf"])
def test_bad_durations(text: str):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [("100", 100), ("1k", 1024), ("10m", 10 << 20), ("10Mi", 10 << 20), ("2GB", 2 << 30), ("1.5k", 1536)],
)
def test_sizes(text: str, size: int):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "m", "10q", "-5", "1 0"])
def test_bad_sizes(text: str):
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("0.5", 500_000_000),
        ("2", 2_000_000_000),
        ("500m", 500_000_000),
        ("100000000", 100_000_000),
        (".25", 250_000_000),
    ],
)
def test_cpus(text: str, nanos: int):
    """CPUs (``0.5``), millicores (``500m``, Kubernetes) and nano-CPUs from 1000 up (faas-swarm)."""
    assert parse_cpus(text) == nanos


@pytest.mark.parametrize("text", ["", "m", "-1", "0.5 cpu", "1e9"])
def test_bad_cpus(text: str):
    with pytest.raises(ValueError):
        parse_cpus(text)


def test_booleans():
    assert parse_bool("true") and parse_bool("TRUE") and parse_bool("1") and parse_bool("yes")
    assert not parse_bool("false") and not parse_bool("0") and not parse_bool("")
    with pytest.raises(ValueError):
        parse_bool("treu")


BASE = {"fprocess": "cat", "PATH": "/usr/bin:/bin"}


def test_defaults_follow_the_classic_watchdog():
    config = WatchdogConfig.from_env(BASE)
    assert config.argv == ("cat",)
    assert config.executable.endswith("/cat")
    assert config.port == 8080 and config.metrics_port == 8081
    assert config.read_timeout_s == config.write_timeout_s == 30.0
    assert config.exec_timeout_s == 0.0
    assert config.call_limit_s == 30.0  # exec_timeout 0: bounded by write_timeout
    assert config.combine_output and config.cgi_headers and not config.marshal_request
    assert config.lock_file == "/tmp/.lock"


def test_fprocess_is_split_like_a_shell_but_not_run_by_one():
    config = WatchdogConfig.from_env({**BASE, "fprocess": "sh -c 'echo \"a b\"; exit 3'"})
    assert config.argv == ("sh", "-c", 'echo "a b"; exit 3')


def test_values_are_parsed():
    config = WatchdogConfig.from_env(
        {
            **BASE,
            "port": "9000",
            "exec_timeout": "1m",
            "read_timeout": "5",
            "max_inflight": "4",
            "max_body_bytes": "1m",
            "combine_output": "false",
            "TMPDIR": "/var/tmp",
        }
    )
    assert config.port == 9000
    assert config.exec_timeout_s == 60.0 and config.call_limit_s == 60.0
    assert config.read_timeout_s == 5.0
    assert config.max_inflight == 4
    assert config.max_body_bytes == 1 << 20
    assert not config.combine_output
    assert config.lock_file == "/var/tmp/.lock"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PATH": "/usr/bin:/bin"}, "fprocess"),
        ({**BASE, "fprocess": "  "}, "fprocess"),
        ({**BASE, "fprocess": "no-such-program-anywhere"}, "fprocess"),
        ({**BASE, "fprocess": "sh -c 'unterminated"}, "fprocess"),
        ({**BASE, "port": "abc"}, "port"),
        ({**BASE, "port": "70000"}, "port"),
        ({**BASE, "metrics_port": "8080"}, "metrics_port"),
        ({**BASE, "mode": "http", "upstream_url": "http://127.0.0.1:8080"}, "upstream_url"),
        ({**BASE, "mode": "http", "upstream_url": "http://localhost:8081"}, "upstream_url"),
        ({**BASE, "mode": "http", "port": "9000", "upstream_url": "http://0.0.0.0:9000"}, "upstream_url"),
        ({**BASE, "mode": "http", "bind": "10.0.0.5", "upstream_url": "http://10.0.0.5:8080"}, "upstream_url"),
        ({**BASE, "exec_timeout": "xyz"}, "exec_timeout"),
        ({**BASE, "read_timeout": "0"}, "read_timeout"),
        ({**BASE, "max_inflight": "-1"}, "max_inflight"),
        ({**BASE, "max_output_bytes": "lots"}, "max_output_bytes"),
        ({**BASE, "combine_output": "maybe"}, "combine_output"),
        ({**BASE, "mode": "teleport"}, "mode"),
        ({**BASE, "log_level": "loud"}, "log_level"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], name: str):
    with pytest.raises(ConfigError) as info:
        WatchdogConfig.from_env(env)
    assert info.value.name == name
    assert str(info.value).startswith(f"invalid {name}=")


def test_an_upstream_on_another_port_or_host_is_fine():
    http = {**BASE, "mode": "http"}
    assert WatchdogConfig.from_env({**http, "upstream_url": "http://127.0.0.1:5000"}).upstream_port == 5000
    assert WatchdogConfig.from_env({**http, "upstream_url": "http://10.0.0.7:8080"}).upstream_host == "10.0.0.7"
    # Listening on an inherited socket, the watchdog does not use ``port``; without metrics, 8081 is free.
    assert WatchdogConfig.from_env({**http, "listen_fd": "3", "upstream_url": "http://127.0.0.1:8080"})
    assert WatchdogConfig.from_env({**http, "metrics_port": "0", "upstream_url": "http://127.0.0.1:8081"})
    # Bound to one other address, the watchdog is not reached on loopback's 8080.
    assert WatchdogConfig.from_env({**http, "bind": "10.0.0.5", "upstream_url": "http://127.0.0.1:8080"})


def test_split_command_splits_as_shlex_does():
    """The watchdog splits a plain fprocess itself (no ``re`` at start-up) and hands quoting to shlex:
    both must give shlex.split's words, or its error, for every string."""
    import random
    import shlex

    from faasd.watchdog.config import split_command

    alphabet = ["a", "b", " ", "\t", "\r", "\n", "\x0b", "\x0c", "\xa0", "'", '"', "\\", "#", "$", "é", "=", "-"]
    generator = random.Random(99)
    for _ in range(5000):
        text = "".join(generator.choices(alphabet, k=generator.randint(0, 12)))
        try:
            expected: list[str] | str = shlex.split(text)
        except ValueError as exc:
            expected = str(exc)
        try:
            got: list[str] | str = split_command(text)
        except ValueError as exc:
            got = str(exc)
        assert got == expected, repr(text)
