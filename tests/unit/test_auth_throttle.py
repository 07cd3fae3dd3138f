"""The failed-login throttle (faasd.gateway.throttle) and the password rules (faasd.credentials), on a
hand-driven clock: the lock schedule, forgetting, per-address independence and the memory bound."""

from __future__ import annotations

import pytest

from faasd.credentials import MIN_PASSWORD_LENGTH, WeakPassword, load_or_create_password
from faasd.gateway.throttle import FREE_FAILURES, MAX_LOCK_S, AuthThrottle, client_key, retry_after_header


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_free_failures_then_doubling_locks_up_to_the_cap() -> None:
    clock = Clock()
    throttle = AuthThrottle(clock=clock)
    for _ in range(FREE_FAILURES - 1):
        assert throttle.failed("192.0.2.1") == 0
        assert throttle.retry_after("192.0.2.1") == 0
    locks = []
    for _ in range(10):
        locks.append(throttle.failed("192.0.2.1"))
        assert throttle.retry_after("192.0.2.1") == locks[-1]
        clock.now += locks[-1]  # The attacker waits out each lock, then guesses again.
        assert throttle.retry_after("192.0.2.1") == 0
    assert locks == [1, 2, 4, 8, 16, 32, MAX_LOCK_S, MAX_LOCK_S, MAX_LOCK_S, MAX_LOCK_S]
    assert retry_after_header(0.2) == "1" and retry_after_header(59.01) == "60"


def test_one_address_locked_others_untouched_and_success_or_time_forgets() -> None:
    clock = Clock()
    throttle = AuthThrottle(clock=clock, forget_s=600)
    for _ in range(FREE_FAILURES + 3):
        throttle.failed("192.0.2.1")
    assert throttle.retry_after("192.0.2.1") > 0
    assert throttle.retry_after("192.0.2.2") == 0 and throttle.retry_after(None) == 0
    throttle.succeeded("192.0.2.1")
    assert throttle.retry_after("192.0.2.1") == 0
    assert throttle.failed("192.0.2.1") == 0  # Counting starts afresh after a success.
    for _ in range(FREE_FAILURES):
        throttle.failed("192.0.2.3")
    clock.now += 600
    assert throttle.retry_after("192.0.2.3") == 0 and throttle.failed("192.0.2.3") == 0


def test_ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7" == client_key("192.0.2.7")
    assert client_key("not an address") == "not an address" and client_key(None) == "?"
    throttle = AuthThrottle(clock=Clock())
    for index in range(FREE_FAILURES):
        throttle.failed(f"2001:db8:1:2::{index + 1:x}")  # One host rotating through its /64.
    assert throttle.retry_after("2001:db8:1:2::ffff") > 0


def test_memory_is_bounded_whatever_the_number_of_addresses() -> None:
    """A flood from 50,000 addresses keeps at most max_addresses records: the least recently failed go."""
    clock = Clock()
    throttle = AuthThrottle(clock=clock, max_addresses=1000)
    for _ in range(FREE_FAILURES + 1):
        throttle.failed("198.51.100.1")
    for index in range(50_000):
        throttle.failed(f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}")
        clock.now += 0.001
    assert len(throttle) == 1000
    assert throttle.retry_after("10.0.195.79") == 0  # 50,000 - 1: one failure, still free.
    assert throttle.retry_after("198.51.100.1") == 0  # Evicted (forgotten), not kept forever.


def test_password_rules(tmp_path) -> None:
    short = "x" * (MIN_PASSWORD_LENGTH - 1)
    with pytest.raises(WeakPassword, match=f"FAASD_PASSWORD has {len(short)} characters; at least 16"):
        load_or_create_password(str(tmp_path), {"FAASD_PASSWORD": short})
    assert load_or_create_password(str(tmp_path), {"FAASD_PASSWORD": "y" * MIN_PASSWORD_LENGTH}) == ("y" * 16, None)
    generated, path = load_or_create_password(str(tmp_path), {})
    assert len(generated) >= 40 and path == str(tmp_path / "password")
    (tmp_path / "password").write_text("hunter2\n")
    with pytest.raises(WeakPassword, match="password has 7 characters"):
        load_or_create_password(str(tmp_path), {})
