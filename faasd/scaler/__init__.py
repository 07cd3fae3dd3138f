"""Throughput-based autoscaling: the pure decision (``decide.py``), its inputs (``meter.py``,
``settings.py``) and the trio task that applies it (``loop.py``, imported by the daemon)."""

from __future__ import annotations
