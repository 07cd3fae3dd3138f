"""``python -m tests.marathon_emulator --port N``: run the Marathon emulator standalone, for a bounded time.

Prints one line once it accepts connections -- ``marathon-emulator ready url=http://127.0.0.1:N pid=P``
-- and runs until SIGTERM/SIGINT or ``--lifetime`` seconds (default 600; there is no unbounded mode),
then kills its tasks and exits 0. See the package docstring for what it emulates.

Examples::

    python -m tests.marathon_emulator --port 8080
    python -m tests.marathon_emulator --port 0 --state /tmp/marathon.json --launch-delay 0.5
    python -m tests.marathon_emulator --username admin --password secret --token dcos-token
    python -m tests.marathon_emulator --port 0 --agent-host 127.0.0.2   # tasks on another "host"
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import trio

from tests.marathon_emulator.images import Runtime
from tests.marathon_emulator.server import EmulatorConfig, serve
from tests.marathon_emulator.tasks import HOST
from tests.marathon_emulator.web import Auth

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LIFETIME_S = 600.0
READY_LINE = "marathon-emulator ready url={url} pid={pid}"


def _default_python() -> str:
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.marathon_emulator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="listen port; 0 picks a free one (default 8080)")
    parser.add_argument("--state", type=Path, help="state file: apps, deployments and tasks survive restarts")
    parser.add_argument(
        "--work-dir", type=Path, help="where task sandboxes go (default: <state>-work, else a temporary directory)"
    )
    parser.add_argument(
        "--agent-host",
        default=HOST,
        help=f"the agent's IP address: tasks listen and are reported there (default {HOST}; e.g. 127.0.0.2)",
    )
    parser.add_argument("--launch-delay", type=float, default=0.0, help="seconds a task stays TASK_STAGING")
    parser.add_argument("--lifetime", type=float, default=DEFAULT_LIFETIME_S, help="exit after this many seconds")
    parser.add_argument("--username", help="HTTP basic auth user (with --password)")
    parser.add_argument("--password", help="HTTP basic auth password")
    parser.add_argument("--token", help="accept 'Authorization: token=<TOKEN>' (DC/OS style)")
    parser.add_argument("--pyz", type=Path, default=ROOT / "dist" / "faasd.pyz", help="the faasd zipapp")
    parser.add_argument("--python", default=_default_python(), help="interpreter that runs the zipapp")
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    args = parser.parse_args(argv)
    if (args.username is None) != (args.password is None):
        parser.error("--username and --password go together")
    try:
        ipaddress.ip_address(args.agent_host)
    except ValueError:
        parser.error(f"--agent-host must be an IP address, not {args.agent_host!r}")
    if not 0 < args.lifetime <= 24 * 3600:
        parser.error("--lifetime must be between 0 and 86400 seconds")
    return args


async def _main(config: EmulatorConfig, lifetime_s: float) -> None:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:

        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    stop.set()

        async def on_lifetime() -> None:
            await trio.sleep(lifetime_s)
            stop.set()

        nursery.start_soon(on_signal)
        nursery.start_soon(on_lifetime)
        async with trio.open_nursery() as emulator:
            url = await emulator.start(serve, config, stop)
            print(READY_LINE.format(url=url, pid=os.getpid()), flush=True)
        nursery.cancel_scope.cancel()  # serve() returned: its tasks are stopped and the state saved.


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    temporary = args.work_dir is None and args.state is None
    if args.work_dir is not None:
        work_dir = args.work_dir
    elif args.state is not None:  # Beside the state: a restarted emulator finds the tasks it must adopt or kill.
        work_dir = args.state.with_name(args.state.name + "-work")
    else:
        work_dir = Path(tempfile.mkdtemp(prefix="marathon-emulator-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    config = EmulatorConfig(
        runtime=Runtime(python=args.python, pyz=args.pyz),
        work_dir=work_dir,
        host=args.host,
        port=args.port,
        state_file=args.state,
        launch_delay_s=args.launch_delay,
        auth=Auth(args.username, args.password, args.token),
        agent_host=args.agent_host,
    )
    code = 0
    try:
        trio.run(_main, config, args.lifetime)
    except* ValueError as group:
        print(f"marathon-emulator: {group.exceptions[0]}", file=sys.stderr)
        code = 2
    except* OSError as group:
        print(f"marathon-emulator: cannot listen on {args.host}:{args.port}: {group.exceptions[0]}", file=sys.stderr)
        code = 2
    finally:
        if temporary:
            shutil.rmtree(work_dir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
