"""Placeholder until the watchdog lands (being written now)."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    raise SystemExit("faasd watchdog: not built yet")
