#!/bin/sh
# A Docker engine with a swarm (one node, or two on this machine) for the Swarm backend's tests and benchmarks.
#
#   sh scripts/docker_env.sh setup [--nodes 2] [--until PID]
#                                                 install/start what is missing; --nodes 2: and a second
#                                                 swarm node (below); with --until, undo what this very
#                                                 call started once process PID has ended
#   sh scripts/docker_env.sh teardown               leave the swarm / stop dockerd / remove node 2, only what
#                                                 setup started
#   sh scripts/docker_env.sh teardown-node2         remove node 2 only (its link stays while the swarm
#                                                 is advertised on it)
#   sh scripts/docker_env.sh stop-node2 | start-node2   stop / start node 2's dockerd (the node-loss test)
#   sh scripts/docker_env.sh stop-dockerd           stop the dockerd setup started (the outage test uses a
#                                                 private dockerd instead: tests/swarm/private_dockerd.py)
#   sh scripts/docker_env.sh start-dockerd          start it again the same way
#   sh scripts/docker_env.sh status                 what runs, and what setup started
#
# setup, step by step (each skipped when already done; docs/swarm.md "Several nodes" for --nodes 2):
#   1. no dockerd binary: apt-get install docker.io (no recommends) -- and busybox-static, which
#      `faasd build-base` copies into the base image -- with a policy-rc.d in place so the package
#      starts nothing;
#   2. `docker info` fails: start dockerd detached (setsid), DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 so
#      swarm never tries a registry pull, pidfile and log in $FAASD_DOCKER_ENV_DIR;
#   3. swarm not active: `docker swarm init --advertise-addr 127.0.0.1` (with --nodes 2: advertised on the
#      link to node 2, 10.99.0.1, which node 2 can reach; 127.0.0.1 is its own loopback there);
#   4. --nodes 2 (scripts/node2.sh): a second dockerd in its own network namespace joins as a worker; it is
#      left *drained* (no task goes there) so tests written for one node keep one node; the multi-node
#      tests make it active while they run.
# What it started is written to $FAASD_DOCKER_ENV_DIR/started (one word a line: dockerd, swarm, node2-link,
# node2-dockerd, node2-swarm), so teardown undoes exactly that and nothing else: a developer's own dockerd or swarm is never touched.
# Needs root for steps 1 and 2 (the test script runs as root on CI machines). POSIX sh.
set -eu

DIR=${FAASD_DOCKER_ENV_DIR:-/tmp/faasd-docker-env}
PIDFILE=$DIR/dockerd.pid
LOG=$DIR/dockerd.log
STARTED=$DIR/started
START_TIMEOUT_S=${FAASD_DOCKER_START_TIMEOUT:-60}

say() { echo "docker_env: $*" >&2; }

NODES=1
# shellcheck source=scripts/node2.sh
. "$(dirname "$0")/node2.sh"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        say "need root (or sudo) to run: $*"; exit 1; fi
}

docker_ok() { docker info >/dev/null 2>&1; }

started() { [ -f "$STARTED" ] && grep -qx "$1" "$STARTED"; }

mark() { started "$1" || echo "$1" >>"$STARTED"; }

unmark() {
    if [ -f "$STARTED" ]; then
        grep -vx "$1" "$STARTED" >"$STARTED.tmp" || true
        mv "$STARTED.tmp" "$STARTED"
    fi
}

install_packages() {
    missing=""
    command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
    [ "$NODES" = 1 ] || command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
    # busybox-static replaces Debian's dynamic busybox: only a static one can be copied into an image alone
    # (ldd succeeds on a dynamic executable only).
    if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then missing="$missing busybox-static"; fi
    [ -n "$missing" ] || return 0
    say "installing Debian packages:$missing"
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        # Without systemd the maintainer scripts would try to start dockerd; this script starts its own.
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod 755 /usr/sbin/policy-rc.d
        policy=yes
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    [ -z "$policy" ] || as_root rm -f /usr/sbin/policy-rc.d
}

wait_docker() {
    # Poll `docker info` every 0.1 s until it answers (or the time is up).
    tries=$((START_TIMEOUT_S * 10))
    while ! docker_ok; do
        tries=$((tries - 1))
        if [ "$tries" -le 0 ]; then
            say "dockerd did not answer within ${START_TIMEOUT_S}s; log: $LOG"
            tail -n 20 "$LOG" >&2 || true
            return 1
        fi
        sleep 0.1
    done
}

start_dockerd() {
    mkdir -p "$DIR"
    rm -f "$PIDFILE"
    say "starting dockerd (log $LOG)"
    # Own session (setsid): a Ctrl-C in the terminal that ran the tests does not reach it. `exec` in a
    # subshell: no shell stays behind holding copies of this script's stdout/stderr (a caller that
    # reads them to the end would wait for dockerd to exit).
    if [ "$(id -u)" = 0 ]; then
        (DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 exec setsid dockerd --pidfile "$PIDFILE" >>"$LOG" 2>&1 </dev/null) &
    else
        (exec sudo env DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 setsid dockerd --pidfile "$PIDFILE" \
            >>"$LOG" 2>&1 </dev/null) &
    fi
    wait_docker
}

# stop_pidfile PIDFILE WHAT SECONDS: TERM the process named in PIDFILE, wait for it to exit (a dockerd
# stops its containers and its own containerd first), KILL it after SECONDS; remove the pidfile.
stop_pidfile() {
    if [ ! -f "$1" ]; then
        say "no pidfile $1: $2 was not started here; left alone"
        return 0
    fi
    pid=$(cat "$1")
    say "stopping $2 (pid $pid)"
    as_root kill -TERM "$pid" 2>/dev/null || true
    tries=$(($3 * 10))
    while kill -0 "$pid" 2>/dev/null; do
        tries=$((tries - 1))
        if [ "$tries" -le 0 ]; then
            say "$2 $pid still running after $3 s; sending SIGKILL"
            as_root kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$1"
}

stop_dockerd() { stop_pidfile "$PIDFILE" dockerd 60; }

STARTED_NOW=""

setup() {
    mkdir -p "$DIR"
    install_packages
    if ! docker_ok; then
        start_dockerd
        mark dockerd
        STARTED_NOW="$STARTED_NOW dockerd"
    fi
    if [ "$NODES" = 2 ]; then
        # Listed before they are made: a watcher (--until) undoes them even if a later step fails.
        for item in node2-link node2-dockerd node2-swarm; do
            started "$item" || STARTED_NOW="$STARTED_NOW $item"
        done
        node2_link_up
    fi
    if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
        if [ "$NODES" = 2 ]; then
            # Advertised where node 2 reaches it; overlay subnets from a pool away from the link.
            say "docker swarm init --advertise-addr $NODE1_ADDR"
            docker swarm init --advertise-addr "$NODE1_ADDR" --listen-addr "$NODE1_ADDR:2377" \
                --default-addr-pool "$SWARM_ADDR_POOL" >/dev/null
        else
            say "docker swarm init --advertise-addr 127.0.0.1"
            docker swarm init --advertise-addr 127.0.0.1 >/dev/null
        fi
        mark swarm
        STARTED_NOW="$STARTED_NOW swarm"
    fi
}

teardown_items() {
    # Undo the given items, each only if still marked: node 2 first (it leaves the swarm, then its
    # dockerd stops), then the swarm (leaving needs a running dockerd), dockerd, and the link last (a
    # swarm still advertised on it keeps it).
    for item in node2-swarm node2-dockerd swarm dockerd node2-link; do
        case " $* " in *" $item "*) ;; *) continue ;; esac
        started "$item" || continue
        case "$item" in
        node2-swarm) node2_leave ;;
        node2-dockerd) node2_stop_dockerd && as_root rm -rf "$NODE2_DATA" "$NODE2_EXEC" "$NODE2_SOCK" ;;
        node2-link) node2_link_down || continue ;;
        swarm)
            if docker_ok; then
                say "docker swarm leave --force"
                docker swarm leave --force >/dev/null 2>&1 || true
            fi
            ;;
        dockerd) stop_dockerd ;;
        esac
        unmark "$item"
    done
}

teardown() { teardown_items node2-swarm node2-dockerd node2-link swarm dockerd; }

teardown_node2() { teardown_items node2-swarm node2-dockerd node2-link; }

watch_and_teardown() {
    # Detached helper: waits for PID (the test run; `exec` keeps the shell's pid), then undoes what the
    # setup call that spawned it started (the remaining arguments), nothing else. It logs to the log file.
    pid=$1
    shift
    while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
    teardown_items "$@" >>"$LOG" 2>&1
}

command=${1:-}
[ $# -eq 0 ] || shift
case "$command" in
setup)
    until_pid=""
    while [ $# -gt 0 ]; do
        case "$1" in
        --nodes) NODES=${2:-}; shift 2 || { say "--nodes needs a count"; exit 2; } ;;
        --until) until_pid=${2:-}; shift 2 || { say "--until needs a pid"; exit 2; } ;;
        *) say "setup: unknown option $1"; exit 2 ;;
        esac
    done
    case "$NODES" in 1 | 2) ;; *) say "--nodes: 1 or 2, got '$NODES'"; exit 2 ;; esac
    setup
    if [ -n "$until_pid" ] && [ -n "$STARTED_NOW" ]; then
        # shellcheck disable=SC2086 # one argument per item
        setsid sh "$0" _watch "$until_pid" $STARTED_NOW </dev/null >/dev/null 2>&1 &
    fi
    [ "$NODES" = 1 ] || node2_setup
    ;;
_watch) watch_and_teardown "$@" ;;
teardown) teardown ;;
teardown-node2) teardown_node2 ;;
stop-dockerd)
    if started dockerd; then stop_dockerd; else say "dockerd was not started by setup; refusing to stop it" && exit 1; fi
    ;;
start-dockerd)
    if started dockerd; then docker_ok || start_dockerd; else say "dockerd was not started by setup" && exit 1; fi
    ;;
stop-node2)
    if started node2-dockerd; then node2_stop_dockerd; else say "node 2 was not started by setup" && exit 1; fi
    ;;
start-node2)
    if started node2-dockerd; then node2_ok || node2_start_dockerd; else say "node 2 was not started by setup" && exit 1; fi
    ;;
status)
    if docker_ok; then echo "dockerd: up"; else echo "dockerd: down"; fi
    docker_ok && echo "swarm: $(docker info --format '{{.Swarm.LocalNodeState}}')"
    if node2_ok; then echo "node 2: up ($NODE2_HOST, $NODE2_ADDR)"; else echo "node 2: down"; fi
    echo "started here: $(tr '\n' ' ' <"$STARTED" 2>/dev/null || true)"
    ;;
*)
    echo "usage: sh scripts/docker_env.sh setup [--nodes 1|2] [--until PID] | teardown | stop-dockerd | start-dockerd |" \
        "teardown-node2 | stop-node2 | start-node2 | status" >&2
    exit 2
    ;;
esac
