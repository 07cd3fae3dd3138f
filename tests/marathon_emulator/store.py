"""What survives an emulator restart: one JSON file, as Marathon keeps its state in ZooKeeper.

Marathon stores app definitions (with their versions), running deployment plans and the instances it
launched, so a new leader carries on where the old one stopped (`High Availability
<https://mesosphere.github.io/marathon/docs/high-availability.html>`_). The emulator writes the same
three things (see :meth:`.scheduler.Scheduler.snapshot`): an API change before it is answered, task
changes within a scheduler tick. Each write goes to a temporary file renamed over the old one, so a
kill at any moment leaves the previous or the new state, never half of one, and a change that was
answered is there after a restart (the page cache outlives a killed process; the machine crashing is
not emulated).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["FORMAT", "Store"]

FORMAT = "marathon-emulator/1"


class Store:
    """The state file (None: nothing is kept, every start is a new cluster)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"<Store {self.path}>"

    def load(self) -> dict[str, Any]:
        """The saved state, or an empty one when there is no file.

        Raises:
            ValueError: the file is not a state this emulator wrote.
        """
        if self.path is None or not self.path.exists():
            return {}
        state = json.loads(self.path.read_text())
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{self.path}: not a {FORMAT} state file")
        return state

    def save(self, state: dict[str, Any]) -> None:
        if self.path is None:
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps({"format": FORMAT, **state}))
        os.replace(temporary, self.path)
