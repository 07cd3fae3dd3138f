"""faasd.procstat against real processes, a command name with spaces and parentheses included."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from faasd.procstat import parent_of, stat_fields


def test_a_name_with_parentheses_and_spaces_does_not_shift_the_fields(tmp_path: Path) -> None:
    sleeper = tmp_path / "a) b ("
    shutil.copy("/bin/sleep", sleeper)
    process = subprocess.Popen([str(sleeper), "30"], start_new_session=True)
    try:
        fields = stat_fields(process.pid)
        assert fields is not None
        assert fields[0] in (b"S", b"R")  # the state, not a piece of the name
        assert int(fields[1]) == os.getpid() and int(fields[2]) == process.pid  # ppid, pgrp: its own group
        assert parent_of(process.pid) == os.getpid()
    finally:
        process.kill()
        process.wait()


def test_a_process_that_is_gone_reads_as_none() -> None:
    process = subprocess.Popen(["true"])
    process.wait()
    assert stat_fields(process.pid) is None and parent_of(process.pid) is None
