# A second Swarm node on this machine, sourced by scripts/docker_env.sh (`setup --nodes 2`). POSIX sh.
#
# A real second node, not a simulation: its own dockerd (and containerd) in its own network namespace,
# joined to the swarm as a worker. Swarm schedules tasks on it, its host-mode published ports answer on
# its own address, the overlay network carries traffic between the two nodes, and stopping its dockerd
# is a node loss the manager sees as one.
#
#   link     netns faasd-node2, veth pair: host side faasd-n2-host 10.99.0.1/24, namespace side
#            faasd-n2-peer 10.99.0.2/24 (lo up, default route via 10.99.0.1);
#   dockerd  data root /var/lib/faasd-node2, exec root /run/faasd-node2, socket
#            unix:///run/faasd-node2.sock, no bridge, no iptables (nothing on the host's tables);
#            DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1: images come by `docker save | load`, never a registry;
#   swarm    `docker swarm join` as a worker advertising 10.99.0.2, then drained (see docker_env.sh).
#
# The cgroup pitfall: `ip netns exec` remounts /sys for the namespace, which drops /sys/fs/cgroup, and
# dockerd refuses to start ("Devices cgroup isn't mounted"). The start command mounts a tmpfs there and
# every cgroup hierarchy the host has (as findmnt lists them) before it execs dockerd; `exec` all along,
# so the pid dockerd writes is the process to stop.
#
# Needs: say, as_root, mark, unmark, started, docker_ok, $DIR, $START_TIMEOUT_S (docker_env.sh).

NODE2_NETNS=faasd-node2
NODE2_HOST_IF=faasd-n2-host
NODE2_PEER_IF=faasd-n2-peer
NODE1_ADDR=10.99.0.1
NODE2_ADDR=10.99.0.2
NODE2_SOCK=/run/faasd-node2.sock
NODE2_HOST=unix://$NODE2_SOCK
NODE2_DATA=/var/lib/faasd-node2
NODE2_EXEC=/run/faasd-node2
NODE2_PIDFILE=$DIR/node2-dockerd.pid
NODE2_LOG=$DIR/node2-dockerd.log
NODE2_IDFILE=$DIR/node2.id
SWARM_ADDR_POOL=10.124.0.0/16
# The overlay networks' subnets come from this pool, away from the link's 10.99.0.0/24.

node2_docker() { as_root docker -H "$NODE2_HOST" "$@"; }

node2_ok() { node2_docker info >/dev/null 2>&1; }

node2_link_up() {
    if ip netns list 2>/dev/null | grep -qw "$NODE2_NETNS"; then
        return 0
    fi
    say "network namespace $NODE2_NETNS, link $NODE1_ADDR <-> $NODE2_ADDR"
    as_root ip netns add "$NODE2_NETNS"
    mark node2-link
    as_root ip link add "$NODE2_HOST_IF" type veth peer name "$NODE2_PEER_IF"
    as_root ip link set "$NODE2_PEER_IF" netns "$NODE2_NETNS"
    as_root ip addr add "$NODE1_ADDR/24" dev "$NODE2_HOST_IF"
    as_root ip link set "$NODE2_HOST_IF" up
    as_root ip netns exec "$NODE2_NETNS" ip link set lo up
    as_root ip netns exec "$NODE2_NETNS" ip addr add "$NODE2_ADDR/24" dev "$NODE2_PEER_IF"
    as_root ip netns exec "$NODE2_NETNS" ip link set "$NODE2_PEER_IF" up
    as_root ip netns exec "$NODE2_NETNS" ip route add default via "$NODE1_ADDR"
}

node2_link_down() {
    # The veth pair goes with the namespace. Not while the swarm is advertised on it: the manager would
    # lose its address (status 1: the link stays marked, a later teardown removes it).
    if docker_ok && [ "$(docker info --format '{{.Swarm.NodeAddr}}')" = "$NODE1_ADDR" ]; then
        say "link to node 2 kept: the swarm is advertised on $NODE1_ADDR"
        return 1
    fi
    as_root ip netns del "$NODE2_NETNS" 2>/dev/null || true
    as_root ip link del "$NODE2_HOST_IF" 2>/dev/null || true
}

node2_mount_script() {
    # Shell commands that mount every cgroup hierarchy of the host (findmnt: TARGET FSTYPE OPTIONS).
    echo "mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup"
    findmnt -rn -t cgroup,cgroup2 -o TARGET,FSTYPE,OPTIONS | while read -r target fstype options; do
        case "$target" in /sys/fs/cgroup) echo "mount -t $fstype -o $options $fstype /sys/fs/cgroup"; continue ;; esac
        echo "mkdir -p $target && mount -t $fstype -o $options $fstype $target"
    done
}

node2_start_dockerd() {
    mkdir -p "$DIR"
    as_root mkdir -p "$NODE2_DATA" "$NODE2_EXEC"
    rm -f "$NODE2_PIDFILE"
    say "starting node 2's dockerd in $NODE2_NETNS (log $NODE2_LOG)"
    inner="set -e; $(node2_mount_script | tr '\n' ';') hostname $NODE2_NETNS;
        DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 exec dockerd --data-root $NODE2_DATA --exec-root $NODE2_EXEC \
        --pidfile $NODE2_PIDFILE -H $NODE2_HOST --bridge=none"
    # Own session (setsid), no shell left holding this script's output: as start_dockerd.
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    (exec $sudo setsid ip netns exec "$NODE2_NETNS" unshare --uts sh -c "$inner" >>"$NODE2_LOG" 2>&1 </dev/null) &
    tries=$((START_TIMEOUT_S * 10))
    while ! node2_ok; do
        tries=$((tries - 1))
        if [ "$tries" -le 0 ]; then
            say "node 2's dockerd did not answer within ${START_TIMEOUT_S}s; log: $NODE2_LOG"
            tail -n 20 "$NODE2_LOG" >&2 || true
            return 1
        fi
        sleep 0.1
    done
}

node2_stop_dockerd() { stop_pidfile "$NODE2_PIDFILE" "node 2's dockerd" 30; }

node2_id() { cat "$NODE2_IDFILE" 2>/dev/null || true; }

node2_join() {
    state=$(node2_docker info --format '{{.Swarm.LocalNodeState}}')
    [ "$state" = active ] && return 0
    manager=$(docker info --format '{{.Swarm.NodeAddr}}')
    if [ "$manager" != "$NODE1_ADDR" ]; then
        say "the swarm's manager advertises $manager, which node 2 cannot reach (it must be $NODE1_ADDR):"
        say "it was not set up by 'setup --nodes 2'; run 'docker swarm leave --force' (if it is yours) and setup again"
        return 1
    fi
    token=$(docker swarm join-token -q worker)
    say "node 2 joins the swarm as a worker ($NODE2_ADDR)"
    node2_docker swarm join --token "$token" --advertise-addr "$NODE2_ADDR" --listen-addr "$NODE2_ADDR:2377" \
        "$NODE1_ADDR:2377" >/dev/null
    mark node2-swarm
    id=$(node2_docker info --format '{{.Swarm.NodeID}}')
    echo "$id" >"$NODE2_IDFILE"
    # Drained: the single-node tests keep one node; tests/swarm/test_multinode.py activates it.
    docker node update --availability drain "$id" >/dev/null
}

node2_setup() {
    command -v ip >/dev/null 2>&1 || { say "node 2 needs iproute2 ('ip')"; return 1; }
    node2_link_up
    if ! node2_ok; then
        node2_start_dockerd
        mark node2-dockerd
    fi
    node2_join
}

node2_leave() {
    id=$(node2_id)
    if node2_ok; then
        node2_docker swarm leave --force >/dev/null 2>&1 || true
    fi
    if [ -n "$id" ] && docker_ok; then
        # The manager keeps a left node as "down" until it is removed.
        tries=50
        until docker node rm --force "$id" >/dev/null 2>&1; do
            tries=$((tries - 1))
            [ "$tries" -gt 0 ] || break
            sleep 0.2
        done
    fi
    rm -f "$NODE2_IDFILE"
}
