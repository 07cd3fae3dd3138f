"""Fork mode basics: the body goes to stdin, stdout comes back; request metadata reaches the process as
``Http_*`` environment variables; methods, paths and content types (docs/watchdog.md "Requests",
"Responses")."""

from __future__ import annotations

import base64
import json
import os
import shlex
import signal
from pathlib import Path

import pytest

from tests.helpers import RawConnection, assert_duration_header, http_request, parse_env

# -- echo ---------------------------------------------------------------------------------------


def test_echo_small_body(start_watchdog):
    watchdog = start_watchdog("cat")
    response = watchdog.request("POST", "/", content=b"hello, watchdog")
    assert response.status_code == 200
    assert response.content == b"hello, watchdog"
    assert_duration_header(response.headers.get("X-Duration-Seconds"))


def test_echo_empty_body(start_watchdog):
    watchdog = start_watchdog("cat")
    response = watchdog.request("POST", "/", content=b"")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Content-Length"] == "0"


def test_get_without_body_gives_empty_stdin(start_watchdog):
    watchdog = start_watchdog("wc -c")
    response = watchdog.request("GET", "/")
    assert response.status_code == 200
    assert response.text.strip() == "0"


def test_echo_5mb_binary_round_trips_exactly(start_watchdog):
    watchdog = start_watchdog("cat")
    body = os.urandom(5 * 1024 * 1024)
    response = watchdog.request("POST", "/", content=body, headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 200
    assert len(response.content) == len(body)
    assert response.content == body


def test_several_sequential_calls_each_run_the_process(start_watchdog):
    watchdog = start_watchdog("cat")
    client = watchdog.client()
    for i in range(10):
        response = client.post("/", content=f"call {i}".encode())
        assert response.status_code == 200
        assert response.text == f"call {i}"


# -- fprocess is split like a shell would, never run through one ----------------------------------


def test_fprocess_is_split_with_shlex(start_watchdog):
    watchdog = start_watchdog("printf '%s|' 'a b' c \"d e\"")
    assert watchdog.request("GET", "/").text == "a b|c|d e|"


def test_fprocess_is_not_run_through_a_shell(start_watchdog):
    watchdog = start_watchdog("echo $HOME; ls > /dev/null && echo `id`")
    assert watchdog.request("GET", "/").text == "$HOME; ls > /dev/null && echo `id`\n"


# -- Http_* environment ---------------------------------------------------------------------------


def test_http_env_vars_reach_the_process(start_watchdog):
    watchdog = start_watchdog("env", MY_SETTING="from-the-watchdog-env")
    response = watchdog.request(
        "POST",
        "/some/path?a=1&b=two",
        content=b"12345",
        headers={
            "Content-Type": "application/json",
            "X-Custom-Header": "custom value",
            "x-lower-case-name": "lower",
            "X-REQUEST-ID": "abc-123",
        },
    )
    assert response.status_code == 200, response.text
    env = parse_env(response.text)
    assert env.get("Http_Method") == "POST"
    assert env.get("Http_Path") == "/some/path"
    assert env.get("Http_Query") == "a=1&b=two"
    assert env.get("Http_ContentType") == "application/json"
    assert env.get("Http_Content_Length") == "5"
    assert env.get("Http_Host") == f"127.0.0.1:{watchdog.port}"
    # One Http_<Canonical_Name> per header, '-' -> '_', whatever case the client sent.
    assert env.get("Http_X_Custom_Header") == "custom value"
    assert env.get("Http_X_Lower_Case_Name") == "lower"
    assert env.get("Http_X_Request_Id") == "abc-123"
    assert "Http_x_lower_case_name" not in env
    assert "Http_X_REQUEST_ID" not in env
    # The watchdog's own environment is passed on.
    assert env.get("MY_SETTING") == "from-the-watchdog-env"
    assert env.get("PATH") == "/usr/bin:/bin"


def test_http_env_vars_with_sh(start_watchdog):
    script = 'printf "%s %s %s\\n" "$Http_Method" "$Http_Path" "$Http_X_Custom_Header"'
    watchdog = start_watchdog(f"sh -c {shlex.quote(script)}")
    response = watchdog.request("PUT", "/items/7", headers={"X-Custom-Header": "v1"})
    assert response.status_code == 200
    assert response.text == "PUT /items/7 v1\n"


def test_no_query_and_no_content_type_leave_their_vars_unset(start_watchdog):
    watchdog = start_watchdog("env")
    response = watchdog.request("GET", "/plain")
    env = parse_env(response.text)
    assert env.get("Http_Method") == "GET"
    assert env.get("Http_Path") == "/plain"
    assert "Http_Query" not in env
    assert "Http_ContentType" not in env


def test_repeated_header_gives_its_first_value(start_watchdog):
    watchdog = start_watchdog("env")
    with RawConnection(watchdog.port) as conn:
        conn.send(http_request("GET", "/", headers={"X-Repeated": "first"})[:-2] + b"X-Repeated: second\r\n\r\n")
        response = conn.read_response()
    assert response.status == 200, response.text
    assert parse_env(response.text).get("Http_X_Repeated") == "first"


def test_cgi_headers_false_passes_no_http_vars(start_watchdog):
    watchdog = start_watchdog("env", cgi_headers="false", MY_SETTING="kept")
    response = watchdog.request("POST", "/p?q=1", content=b"x", headers={"X-Custom-Header": "v"})
    assert response.status_code == 200
    env = parse_env(response.text)
    assert not [name for name in env if name.startswith("Http_")], env
    assert env.get("MY_SETTING") == "kept"


def test_marshal_request_sends_json_document(start_watchdog):
    watchdog = start_watchdog("cat", marshal_request="true")
    body = b"\x00\x01binary\xff"
    response = watchdog.request("POST", "/", content=body, headers={"X-Custom-Header": "v"})
    assert response.status_code == 200
    document = json.loads(response.content)
    assert base64.b64decode(document["body"]["raw"]) == body
    assert document["header"]["X-Custom-Header"] == ["v"]


# -- methods and paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_invoke_methods_run_the_function(start_watchdog, method):
    watchdog = start_watchdog("sh -c 'echo \"$Http_Method\"'")
    response = watchdog.request(method, "/")
    assert response.status_code == 200
    assert response.text == f"{method}\n"


@pytest.mark.parametrize("path", ["/", "/function/echo", "/a/b/c/d", "/x.html", "/_/other", "/health"])
def test_any_path_runs_the_function(start_watchdog, path):
    watchdog = start_watchdog("sh -c 'printf %s \"$Http_Path\"'")
    response = watchdog.request("GET", path)
    assert response.status_code == 200
    assert response.text == path


@pytest.mark.parametrize("method", ["TRACE", "CONNECT_ISH", "PROPFIND"])  # HEAD/OPTIONS: test_methods.py
def test_other_methods_get_405_and_do_not_run(start_watchdog, tmp_path: Path, method):
    marker = tmp_path / "ran"
    watchdog = start_watchdog(f"sh -c 'echo ran >> {marker}'")
    with RawConnection(watchdog.port) as conn:
        conn.send(http_request(method, "/"))
        response = conn.read_response()
    assert response.status == 405
    allow = {m.strip() for m in (response.header("Allow") or "").split(",")}
    assert {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} <= allow, response.headers
    assert_duration_header(response.header("X-Duration-Seconds"))
    assert not marker.exists(), "the function ran for a method that is not allowed"
    # The function still runs for an allowed method afterwards.
    assert watchdog.request("POST", "/").status_code == 200
    assert marker.read_text() == "ran\n"


# -- content types --------------------------------------------------------------------------------


def test_request_content_type_is_echoed(start_watchdog):
    watchdog = start_watchdog("cat")
    response = watchdog.request("POST", "/", content=b"{}", headers={"Content-Type": "application/json"})
    assert response.headers["Content-Type"] == "application/json"


def test_default_content_type_without_one_in_the_request(start_watchdog):
    watchdog = start_watchdog("echo hi")
    with RawConnection(watchdog.port) as conn:
        conn.send(http_request("GET", "/"))
        response = conn.read_response()
    assert response.status == 200
    assert response.header("Content-Type") == "text/plain; charset=utf-8"


def test_content_type_setting_overrides(start_watchdog):
    watchdog = start_watchdog("cat", content_type="application/x-custom")
    response = watchdog.request("POST", "/", content=b"{}", headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-custom"
    response = watchdog.request("GET", "/")
    assert response.headers["Content-Type"] == "application/x-custom"


# -- bigger and concurrent ------------------------------------------------------------------------


def test_large_output_is_returned_whole(start_watchdog):
    watchdog = start_watchdog("head -c 10485760 /dev/urandom")
    response = watchdog.request("GET", "/")
    assert response.status_code == 200
    assert len(response.content) == 10 * 1024 * 1024


def test_process_that_ignores_a_large_stdin(start_watchdog):
    watchdog = start_watchdog("echo ignored the body")
    response = watchdog.request("POST", "/", content=b"z" * (2 * 1024 * 1024))
    assert response.status_code == 200
    assert response.text == "ignored the body\n"


def test_concurrent_calls_get_their_own_answers(start_watchdog):
    from concurrent.futures import ThreadPoolExecutor

    watchdog = start_watchdog("cat")
    bodies = [os.urandom(1000 + i) for i in range(20)]
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda body: watchdog.request("POST", "/", content=body), bodies))
    assert [a.status_code for a in answers] == [200] * 20
    assert [a.content for a in answers] == bodies


# -- logging --------------------------------------------------------------------------------------


def test_write_debug_logs_the_output(start_watchdog):
    from tests.helpers import wait_for

    # The marker is built by the process, so the logged fprocess itself never contains it.
    watchdog = start_watchdog("printf '%s-%s\\n' debug-marker 1234", write_debug="true")
    assert watchdog.request("GET", "/").status_code == 200
    wait_for(lambda: "debug-marker-1234" in watchdog.logs(), 3.0, lambda: f"output not logged:\n{watchdog.logs()}")


def test_output_is_not_logged_by_default(start_watchdog):
    watchdog = start_watchdog("printf '%s-%s\\n' quiet-marker 5678")
    assert watchdog.request("GET", "/").text == "quiet-marker-5678\n"
    watchdog.send_signal(signal.SIGTERM)
    watchdog.wait_exit(3.0)
    assert "quiet-marker-5678" not in watchdog.logs()
