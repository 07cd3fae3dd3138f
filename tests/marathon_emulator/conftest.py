"""The ``marathon_emulator`` fixture for the emulator's own tests (defined in fixture.py, for any test dir)."""

from tests.marathon_emulator.fixture import marathon_emulator  # noqa: F401 -- a fixture, found by name
