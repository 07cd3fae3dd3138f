"""The ``marathon_emulator`` fixture (tests/marathon_emulator/fixture.py) for the Marathon backend's tests."""

from tests.marathon_emulator.fixture import marathon_emulator  # noqa: F401 -- a fixture, found by name
