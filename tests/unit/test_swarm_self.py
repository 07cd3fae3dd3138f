"""Where the daemon runs (faasd/providers/swarm/placement.py), from the texts of /proc and Docker's inspect
documents. The same functions against a real engine: tests/swarm/test_placement.py."""

from __future__ import annotations

from faasd.providers.swarm.placement import choose_route, container_candidates

ID = "ecbe0da65d5e742657595f165f7c019bd39d68ce743ecb914290794511652d85"
OTHER = "5f3c9d1e2b4a69788796a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4"

# /proc/self/mountinfo and /proc/self/cgroup in a container (Docker 20.10, cgroup v1), as read there.
CONTAINER_MOUNTINFO = f"""\
80 60 0:52 / / rw,relatime master:24 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X
97 80 254:0 /var/lib/docker/containers/{ID}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda rw
98 80 254:0 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw
99 80 254:0 /var/lib/docker/containers/{ID}/hosts /etc/hosts rw,relatime - ext4 /dev/vda rw
"""
CGROUP_V1 = f"9:name=systemd:/docker/{ID}\n8:pids:/docker/{ID}\n7:blkio:/docker/{ID}\n"
# cgroup v2 with a private cgroup namespace: the cgroup file says nothing, the mount table still does.
CGROUP_V2_PRIVATE = "0::/\n"
# The host's own table lists each running container's shm mount: that is no evidence of being in one.
HOST_MOUNTINFO = f"""\
25 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
310 25 0:60 / /var/lib/docker/containers/{OTHER}/mounts/shm rw,nosuid - tmpfs shm rw,size=65536k
"""
HOST_CGROUP = "0::/user.slice/user-0.slice/session-1.scope\n"


def test_container_id_from_the_etc_mounts_or_the_cgroup() -> None:
    assert container_candidates(CONTAINER_MOUNTINFO, CGROUP_V1) == [ID]
    assert container_candidates(CONTAINER_MOUNTINFO, CGROUP_V2_PRIVATE) == [ID]
    assert container_candidates("", CGROUP_V1) == [ID]
    assert container_candidates("", f"0::/system.slice/docker-{ID}.scope\n") == [ID]  # The systemd cgroup driver.


def test_the_host_is_no_container() -> None:
    assert container_candidates(HOST_MOUNTINFO, HOST_CGROUP) == []
    assert container_candidates("", "") == []
    # A mount of some container's hostname file elsewhere than /etc is not ours either.
    elsewhere = f"98 80 254:0 /var/lib/docker/containers/{OTHER}/hostname /mnt/x rw - ext4 /dev/vda rw\n"
    assert container_candidates(elsewhere, "") == []


def _container(networks: dict, service: str = "") -> dict:
    labels = {"com.docker.swarm.service.id": service} if service else {}
    return {"Id": ID, "Config": {"Hostname": ID[:12], "Labels": labels}, "NetworkSettings": {"Networks": networks}}


FUNCTIONS = frozenset({"functions", "iih8irmb7tk1kqxmixw9or0u2"})


def test_route_from_the_container_networks() -> None:
    on_network = choose_route(
        _container({"functions": {"NetworkID": "iih8irmb7tk1kqxmixw9or0u2"}}), FUNCTIONS, "functions"
    )
    assert (on_network.route, on_network.container, on_network.service, on_network.warning) == (
        "overlay-dns",
        ID,
        "",
        False,
    )
    assert "attached to network functions" in on_network.reason
    # A Swarm task of the daemon's own service; the network matched by ID under another key.
    task = choose_route(
        _container({"fn-alias": {"NetworkID": "iih8irmb7tk1kqxmixw9or0u2"}}, service="svc1"), FUNCTIONS, "functions"
    )
    assert (task.route, task.service) == ("overlay-dns", "svc1")

    host_network = choose_route(_container({"host": {"NetworkID": "h"}}), FUNCTIONS, "functions")
    assert (host_network.route, host_network.warning) == ("host-port", False)
    stranded = choose_route(_container({"bridge": {"NetworkID": "b"}}), FUNCTIONS, "functions")
    assert (stranded.route, stranded.warning) == ("host-port", True)
    assert f"docker network connect functions {ID[:12]}" in stranded.reason

    host = choose_route(None, FUNCTIONS, "functions")
    assert (host.route, host.container, host.warning, host.reason) == ("host-port", "", False, "on the host")
