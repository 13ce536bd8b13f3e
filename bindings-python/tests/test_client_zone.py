"""A client told its zone sends a key's requests to the key's owner in that zone, against a live
cluster of three `ringkv server` processes in zones a, b and c; and to the other owners once that
node is gone. The ordering itself is tested without I/O on a ring document."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

import ringkv
import ringkv.aio
from conftest import _free_run, ringkv_binary
from ringkv._routing import Router, RoutingTable, normalize_node_url, prefer_zone

ZONES = ("a", "b", "c")
PARTITIONS = 16


# ----- the ordering, on a ring document -----


def ring_doc(members: List[dict], replicas: List[str]) -> dict:
    """A ring of 4 partitions, each with the preference list `replicas`."""
    return {
        "version": 3,
        "partition_count": 4,
        "members": members,
        "partitions": [{"id": p, "replicas": replicas} for p in range(4)],
    }


def member(node_id: str, port: int, zone: object, alive: bool = True) -> dict:
    return {"id": node_id, "status": "up", "alive": alive, "http_addr": f"127.0.0.1:{port}", "zone": zone}


def test_the_owners_in_the_clients_zone_come_first_in_preference_order() -> None:
    doc = ring_doc(
        [
            member("n1", 1, "a"),
            member("n2", 2, "b"),
            member("n3", 3, None),
            member("n4", 4, "b"),
            member("n5", 5, "b", alive=False),  # never routed to, whatever its zone
        ],
        ["n1", "n2", "n3", "n5", "n4"],
    )
    table = RoutingTable(doc, normalize_node_url("http://127.0.0.1:9"))
    ports = lambda endpoints: [e.port for e in endpoints]  # noqa: E731
    assert ports(table.replicas_for_zone(b"b", b"k", "b")) == [2, 4, 1, 3]
    assert ports(table.replicas_for_zone(b"b", b"k", "a")) == [1, 2, 3, 4]
    assert ports(table.replicas_for_zone(b"b", b"k", None)) == [1, 2, 3, 4]
    assert ports(table.replicas_for_zone(b"b", b"k", "elsewhere")) == [1, 2, 3, 4]
    assert prefer_zone([], "b", table.zones.get) == []

    # The router puts them before the configured node; without a zone, as before.
    seed = normalize_node_url("http://seed:1")
    zoned, plain = Router([seed], 10.0, "b"), Router([seed], 10.0)
    for router in (zoned, plain):
        router.install(table)
    assert ports(zoned.key_targets(b"b", b"k")) == [2, 4, 1, 3, 1]
    assert ports(plain.key_targets(b"b", b"k")) == [1, 2, 3, 4, 1]
    assert Router([seed], 10.0, "").zone is None


def test_only_a_client_with_a_zone_reads_the_ring_before_its_first_key_request() -> None:
    seed = normalize_node_url("http://seed:1")
    zoned = Router([seed], 10.0, "b")
    assert zoned.claim_first_ring() and not zoned.claim_first_ring()  # once, even if it failed
    assert not Router([seed], 10.0).claim_first_ring()
    assert not Router([seed], 0.0, "b").claim_first_ring()  # routing off
    with pytest.raises(TypeError, match="zone"):
        ringkv.Client("http://127.0.0.1:1", zone=3)  # type: ignore[arg-type]
    assert ringkv.Client("http://127.0.0.1:1", zone="b", ring_refresh=0).zone == "b"
    assert ringkv.aio.AsyncClient("http://127.0.0.1:1", zone=" ").zone is None


# ----- a live cluster in three zones -----


class ZonedCluster:
    def __init__(self, urls: Dict[str, str], processes: Dict[str, "subprocess.Popen[bytes]"], logs: List[Path]):
        self.urls = urls  # zone -> URL
        self.processes = processes  # zone -> process
        self.logs = logs

    def node_id(self, zone: str) -> str:
        return f"n{zone}"

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            process.wait(timeout=20)


def _settled(urls: List[str]) -> bool:
    versions = set()
    try:
        for url in urls:
            with urllib.request.urlopen(url + "/cluster", timeout=1) as answer:
                status = json.loads(answer.read())
            members = status.get("members", [])
            if len(members) != len(urls) or any(m.get("status") != "up" or not m.get("alive") for m in members):
                return False
            versions.add(status.get("ring_version"))
    except (OSError, ValueError):
        return False
    return len(versions) == 1 and None not in versions


@pytest.fixture(scope="module")
def zoned_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZonedCluster]:
    binary = ringkv_binary()
    if not binary.exists():
        pytest.fail(f"{binary} is missing: build it with `cargo build -p ringkv` (or set RINGKV_BIN)")
    directory = tmp_path_factory.mktemp("zoned-cluster")
    config = directory / "ringkv.toml"
    config.write_text(f"partitions = {PARTITIONS}\ngossip_interval_ms = 100\n")
    port = _free_run(len(ZONES), [])
    peer_port = _free_run(len(ZONES), list(range(port, port + len(ZONES))))
    urls, processes, logs = {}, {}, []
    for i, zone in enumerate(ZONES):
        seed = [] if i == 0 else ["--seed", f"127.0.0.1:{peer_port}"]
        log = directory / f"n{zone}.log"
        with open(log, "wb") as out:
            processes[zone] = subprocess.Popen(
                [
                    str(binary), "server", "--node-id", f"n{zone}", "--zone", zone, "--config", str(config),
                    "--data-dir", str(directory / f"n{zone}"), "--shutdown-delay-ms", "0",
                    "--listen", f"127.0.0.1:{port + i}", "--peer-listen", f"127.0.0.1:{peer_port + i}", *seed,
                ],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        urls[zone] = f"http://127.0.0.1:{port + i}"
        logs.append(log)
        if i == 0:
            time.sleep(0.3)  # the seed listens first
    cluster = ZonedCluster(urls, processes, logs)
    deadline = time.monotonic() + 90
    while not _settled(list(urls.values())):
        for process, log in zip(processes.values(), logs):
            if process.poll() is not None:
                cluster.stop()
                pytest.fail(f"ringkv server exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            cluster.stop()
            pytest.fail("the zoned cluster did not settle within 90 s:\n" + logs[0].read_text(errors="replace"))
        time.sleep(0.2)
    yield cluster
    cluster.stop()


def coordinated(url: str) -> int:
    """Key requests the node at `url` has coordinated (its `ringkv_requests_total`, every op and
    outcome): the requests clients sent it, since an owner coordinates what it receives."""
    with urllib.request.urlopen(url + "/metrics", timeout=2) as answer:
        text = answer.read().decode()
    return sum(int(float(m.group(1))) for m in re.finditer(r"^ringkv_requests_total\{[^}]*\} (\S+)$", text, re.M))


def test_requests_go_to_the_owner_in_the_clients_zone_then_to_the_others(
    zoned_cluster: ZonedCluster, bucket: str
) -> None:
    urls = zoned_cluster.urls
    # Configured: the zone-a node only; the zone-b node is learnt from the ring.
    client = ringkv.Client(urls["a"], zone="b", bucket=bucket, backoff=0)
    keys = [f"key-{i}" for i in range(40)]
    before = {zone: coordinated(url) for zone, url in urls.items()}
    for key in keys:
        put = client.put(key, key.encode())
        assert put.node == "nb", (key, put.node)
        got = client.get(key)
        assert got.node == "nb" and got.values == [key.encode()]
    after = {zone: coordinated(url) for zone, url in urls.items()}
    assert after["b"] - before["b"] == 2 * len(keys)
    assert after["a"] == before["a"] and after["c"] == before["c"]

    ring = client.ring()
    first = {p["id"]: p["replicas"][0] for p in ring["partitions"]}
    assert set(first.values()) == {"na", "nb", "nc"}  # nb is not simply every key's first owner
    for key in keys:
        replicas = client.replicas_for(key)
        assert replicas[0] == urls["b"], (key, replicas)
    # Without a zone, the first owner takes a key's requests, as before.
    plain = ringkv.Client(urls["a"], bucket=bucket)
    plain.refresh_ring()
    assert {plain.get(key).node for key in keys} == {"na", "nb", "nc"}

    # The zone-b node dies: the client goes on with the other owners, reads and writes alike.
    zoned_cluster.processes["b"].kill()
    zoned_cluster.processes["b"].wait(timeout=20)
    before = {zone: coordinated(urls[zone]) for zone in ("a", "c")}
    for key in keys:
        put = client.put(key, b"after", context=client.get(key).context)
        assert put.node in ("na", "nc"), (key, put.node)
    after = {zone: coordinated(urls[zone]) for zone in ("a", "c")}
    assert sum(after.values()) - sum(before.values()) == 2 * len(keys)


def test_the_async_client_prefers_its_zone_too(zoned_cluster: ZonedCluster, bucket: str) -> None:
    urls = zoned_cluster.urls

    async def run() -> List[str]:
        client = ringkv.aio.AsyncClient([urls["a"]], zone="c", bucket=bucket)
        try:
            nodes = []
            for i in range(20):
                nodes.append((await client.put(f"k{i}", b"v")).node)
                nodes.append((await client.get(f"k{i}")).node)
            return nodes
        finally:
            await client.aclose()

    assert set(asyncio.run(run())) == {"nc"}
