"""The client for production, against a live 3-node cluster of `ringkv server` processes over
TLS (a throwaway CA made with the `openssl` CLI): routing to the key's owners, certificate
checks, fallback past a killed node, the rule that a write once sent is never sent again,
connection pooling, and the asyncio client doing the same. Plus the pure routing and retry
policy (`ringkv._routing`), table by table.

Assertions are on outcomes (which node coordinated, what was stored, how many requests and
connections a server saw), never on how long something took."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

import ringkv
import ringkv.aio
from conftest import _free_run, ringkv_binary
from ringkv import _native
from ringkv._routing import (
    Endpoint,
    FailureKind,
    Idempotence,
    RetryDecision,
    RoutingTable,
    normalize_node_url,
    plan_targets,
    retry_decision,
)

NODES = 3
PARTITIONS = 64


# ----- a throwaway CA, and a cluster of `ringkv server` processes over TLS -----


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that signed nothing here
    other_name: Path  # a certificate (and key) of the CA for another host only


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA, a node certificate it signed for 127.0.0.1 and localhost, and an unrelated CA."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make the test certificates (apt-get install openssl)")
    directory = tmp_path_factory.mktemp("tls")
    _make_ca(directory, "ca")
    _make_ca(directory, "other-ca")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=localhost",
        cwd=directory,
    )  # fmt: skip
    (directory / "node.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "node.pem", "-days", "2", "-extfile", "node.ext",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "other-name.pem", "-out", "other-name.crt", "-days", "2", "-subj", "/CN=db.example",
        "-CA", "ca.pem", "-CAkey", "ca.key", "-addext", "subjectAltName=DNS:db.example",
        cwd=directory,
    )  # fmt: skip
    # One PEM file with the certificate and its key.
    other_name = directory / "other-name.pem"
    other_name.write_text((directory / "other-name.crt").read_text() + other_name.read_text())
    return Certs(directory / "ca.pem", directory / "node.pem", directory / "node.key", directory / "other-ca.pem", other_name)


@dataclass
class TlsCluster:
    urls: List[str]
    processes: List["subprocess.Popen[bytes]"]
    logs: List[Path]
    ca: Path
    names: Dict[str, str] = field(default_factory=dict)  # URL -> node id

    def node_of(self, url: str) -> str:
        return self.names[url]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _tls_settled(urls: List[str], context: ssl.SSLContext) -> bool:
    versions = set()
    try:
        for url in urls:
            with urllib.request.urlopen(url + "/cluster", timeout=1, context=context) as answer:
                status = json.loads(answer.read())
            members = status.get("members", [])
            if len(members) != len(urls) or any(m.get("status") != "up" or not m.get("alive") for m in members):
                return False
            versions.add(status.get("ring_version"))
    except (OSError, ValueError):
        return False
    return len(versions) == 1 and None not in versions


def start_tls_cluster(directory: Path, certs: Certs) -> TlsCluster:
    binary = ringkv_binary()
    if not binary.exists():
        pytest.fail(f"{binary} is missing: build it with `cargo build -p ringkv` (or set RINGKV_BIN)")
    config = directory / "ringkv.toml"
    config.write_text(f"partitions = {PARTITIONS}\ngossip_interval_ms = 100\n")
    port = _free_run(NODES, [])
    peer_port = _free_run(NODES, list(range(port, port + NODES)))
    urls = [f"https://127.0.0.1:{port + i}" for i in range(NODES)]
    processes, logs = [], []
    for i in range(NODES):
        seed = [] if i == 0 else ["--seed", f"127.0.0.1:{peer_port}"]
        log = directory / f"n{i + 1}.log"
        with open(log, "wb") as out:
            processes.append(
                subprocess.Popen(
                    [
                        str(binary), "server", "--node-id", f"n{i + 1}", "--config", str(config),
                        "--data-dir", str(directory / f"n{i + 1}"),
                        "--listen", f"127.0.0.1:{port + i}", "--peer-listen", f"127.0.0.1:{peer_port + i}",
                        "--tls-cert", str(certs.cert), "--tls-key", str(certs.key), *seed,
                    ],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )
            )  # fmt: skip
        logs.append(log)
        if i == 0:
            time.sleep(0.3)  # the seed listens first
    cluster = TlsCluster(urls, processes, logs, certs.ca, {url: f"n{i + 1}" for i, url in enumerate(urls)})
    context = ssl.create_default_context(cafile=str(certs.ca))
    deadline = time.monotonic() + 90
    while not _tls_settled(urls, context):
        for process, log in zip(processes, logs):
            if process.poll() is not None:
                cluster.stop()
                pytest.fail(f"ringkv server exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            cluster.stop()
            pytest.fail("the TLS cluster did not settle within 90 s:\n" + logs[0].read_text(errors="replace"))
        time.sleep(0.2)
    return cluster


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[TlsCluster]:
    cluster = start_tls_cluster(tmp_path_factory.mktemp("tls-cluster"), certs)
    yield cluster
    cluster.stop()


def replicas_of(ring: dict, bucket: bytes, key: bytes) -> list:
    """The replicas of the key's partition, computed here from the key's ring position (the
    core's MD5) and the partition table, independently of the client's routing code."""
    count = ring["partition_count"]
    partition = ringkv.Ring.position(key, bucket=bucket) >> (128 - count.bit_length() + 1)
    return next(p for p in ring["partitions"] if p["id"] == partition)["replicas"]


def owner_of(ring: dict, bucket: bytes, key: bytes) -> str:
    """The first replica of the key's partition (see `replicas_of`)."""
    return replicas_of(ring, bucket, key)[0]


# ----- routing -----


def test_each_request_goes_to_an_owner_of_its_key(tls_cluster: TlsCluster, bucket: str) -> None:
    # Only one node is configured: the others are learnt from its ring.
    client = ringkv.Client(tls_cluster.urls[0], ca_file=str(tls_cluster.ca), bucket=bucket)
    ring = client.refresh_ring()
    assert client.ring_version == ring["version"] and client.nodes == [tls_cluster.urls[0]]
    coordinators = []
    for i in range(120):
        key = f"key-{i}"
        owner = owner_of(ring, bucket.encode(), key.encode())
        assert client.replicas_for(key)[0] in tls_cluster.urls
        assert tls_cluster.node_of(client.replicas_for(key)[0]) == owner
        put = client.put(key, f"v{i}".encode())
        got = client.get(key)
        # X-Ringkv-Node names the node that coordinated: the owner, with no forwarding hop.
        assert put.node == owner and got.node == owner, (key, owner, put.node, got.node)
        # The acknowledgements are the first W (2) of the key's replicas to store it: the
        # coordinator sends the write to the others while it stores it, so it need not be one.
        owners = replicas_of(ring, bucket.encode(), key.encode())
        assert len(put.replicas) == 2 and set(put.replicas) <= set(owners), (key, put.replicas)
        assert got.values == [f"v{i}".encode()]
        coordinators.append(owner)
    assert set(coordinators) == {"n1", "n2", "n3"}  # so the test is not passing by accident
    deleted = client.delete("key-7")
    assert deleted.node == owner_of(ring, bucket.encode(), b"key-7")


def test_the_partition_of_a_key_is_the_cores(tls_cluster: TlsCluster) -> None:
    ring = ringkv.Ring(members=["a", "b", "c"], partitions=PARTITIONS)
    native = ring._ring  # the core's own Ring
    for i in range(500):
        key = f"k{i}".encode()
        assert _native.key_partition(b"b", key, PARTITIONS) == native.partition_of(b"b", key)
    for bad in (0, 3, 2**21):
        with pytest.raises(ringkv.InvalidRequestError, match="power of two"):
            _native.key_partition(b"b", b"k", bad)


# ----- TLS -----


def test_a_certificate_from_another_ca_is_refused_and_nothing_is_sent(tls_cluster: TlsCluster, certs: Certs) -> None:
    wrong = ringkv.Client(tls_cluster.urls, ca_file=str(certs.other_ca))
    with pytest.raises(ringkv.TlsError, match="certificate verify failed") as error:
        wrong.get("k")
    assert str(certs.other_ca) in str(error.value) and "TLS handshake failed" in str(error.value)
    assert isinstance(error.value, ringkv.UnavailableError)
    # A write is refused the same way, before anything is sent: not an "outcome unknown".
    with pytest.raises(ringkv.TlsError):
        wrong.put("k", b"v")
    # Without a CA file the system's roots are used, and they do not know this CA either.
    with pytest.raises(ringkv.TlsError, match="system's trusted roots"):
        ringkv.Client(tls_cluster.urls[0], ring_refresh=0).get("k")
    # A certificate of the right CA that names another host (db.example, not 127.0.0.1).
    impostor = SilentServer(certs, cert=certs.other_name)
    try:
        with pytest.raises(ringkv.TlsError, match="IP address mismatch|doesn't match|must name 127.0.0.1"):
            ringkv.Client(impostor.url, ca_file=str(certs.ca), ring_refresh=0).put("k", b"v")
        assert impostor.requests == []
    finally:
        impostor.close()
    # A CA file that is not one is refused when the client is made.
    with pytest.raises(ringkv.InvalidRequestError, match="ca_file"):
        ringkv.Client(tls_cluster.urls[0], ca_file=str(certs.key))


# ----- a write is sent at most once -----


class SilentServer:
    """A TLS server that reads requests and never answers; counts what it read."""

    def __init__(self, certs: Certs, cert: Optional[Path] = None) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if cert is None:
            self.context.load_cert_chain(str(certs.cert), str(certs.key))
        else:
            self.context.load_cert_chain(str(cert))
        self.requests: List[bytes] = []
        self.connections: List[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        self.connections.append(conn)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
        except OSError:
            return
        self.requests.append(data.split(b"\r\n", 1)[0])  # and never answers

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def silent(certs: Certs) -> Iterator[SilentServer]:
    server = SilentServer(certs)
    yield server
    server.close()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"https://127.0.0.1:{s.getsockname()[1]}"


def test_a_write_that_was_sent_is_never_sent_again(tls_cluster: TlsCluster, silent: SilentServer, bucket: str) -> None:
    ca = str(tls_cluster.ca)
    # The silent node comes first (no ring: the configured order), a real node second.
    client = ringkv.Client([silent.url, tls_cluster.urls[0]], ca_file=ca, ring_refresh=0, timeout=0.5, bucket=bucket)
    with pytest.raises(ringkv.RequestTimeoutError, match="may or may not have been applied") as error:
        client.put("k", b"v")
    assert silent.url in str(error.value) and "not retried" in str(error.value)
    assert [line.split(b" ")[0] for line in silent.requests] == [b"PUT"]  # exactly one request
    # ... and the real node never got it.
    check = ringkv.Client(tls_cluster.urls[0], ca_file=ca, ring_refresh=0, bucket=bucket)
    assert check.get("k").values == []
    # A read is retried: the silent node times out, the real node answers.
    reader = ringkv.Client([silent.url, tls_cluster.urls[0]], ca_file=ca, ring_refresh=0, timeout=0.5, bucket=bucket)
    assert reader.get("k").values == [] and [r.split(b" ")[0] for r in silent.requests] == [b"PUT", b"GET"]
    # The same after the request was sent on a pooled connection: delete is a write too.
    with pytest.raises(ringkv.RequestTimeoutError, match="may or may not have been applied"):
        ringkv.Client([silent.url], ca_file=ca, ring_refresh=0, timeout=0.5, bucket=bucket).delete(
            "k", context=check.put("k", b"x").context
        )
    assert [r.split(b" ")[0] for r in silent.requests] == [b"PUT", b"GET", b"DELETE"]
    assert check.get("k").values == [b"x"]


def test_a_write_that_certainly_was_not_sent_goes_to_the_next_node(tls_cluster: TlsCluster, bucket: str) -> None:
    refused = _closed_port_url()
    client = ringkv.Client([refused, tls_cluster.urls[1]], ca_file=str(tls_cluster.ca), ring_refresh=0, bucket=bucket)
    put = client.put("k", b"v")
    assert put.node == "n2"  # the refused node was skipped
    assert client.get("k").values == [b"v"]
    # Every node refusing: nothing sent, an UnavailableError naming each.
    nowhere = ringkv.Client([refused, _closed_port_url()], ring_refresh=0, backoff=0)
    with pytest.raises(ringkv.UnavailableError, match="could not connect") as error:
        nowhere.put("k", b"v")
    assert not isinstance(error.value, ringkv.RequestTimeoutError) and refused in str(error.value)


# ----- a killed node -----


def test_reads_and_writes_go_on_when_a_node_is_killed(
    tmp_path_factory: pytest.TempPathFactory, certs: Certs, bucket: str
) -> None:
    cluster = start_tls_cluster(tmp_path_factory.mktemp("tls-kill"), certs)
    try:
        client = ringkv.Client(cluster.urls, ca_file=str(certs.ca), bucket=bucket, ring_refresh=1)
        ring = client.refresh_ring()
        keys = [f"k{i}" for i in range(60)]
        for key in keys:
            client.put(key, b"before")
        owned_by_n1 = [k for k in keys if owner_of(ring, bucket.encode(), k.encode()) == "n1"]
        assert owned_by_n1
        cluster.processes[0].kill()  # SIGKILL: connections to it are refused from now on
        cluster.processes[0].wait(timeout=10)
        for key in keys:
            got = client.get(key)
            assert got.values == [b"before"] and got.node != "n1"
            written = client.put(key, b"after", context=got.context)
            assert written.node != "n1" and len(written.replicas) >= 2
        assert all(client.get(key).values == [b"after"] for key in keys)
        # The client learns the new ring (n1 not alive): its keys route to the others first.
        deadline = time.monotonic() + 60
        while cluster.urls[0] in client.replicas_for(owned_by_n1[0]):
            assert time.monotonic() < deadline, "the client never learnt that n1 is gone"
            client.get(owned_by_n1[0])  # requests schedule the ring reads
            time.sleep(0.2)
        assert cluster.urls[0] not in client.replicas_for(owned_by_n1[0])
    finally:
        cluster.stop()


# ----- pooling -----


class CountingProxy:
    """A TCP forwarder to one node that counts the connections it accepts (TLS passes through)."""

    def __init__(self, upstream: str) -> None:
        endpoint = normalize_node_url(upstream)
        self.upstream = (endpoint.host, endpoint.port)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted = 0
        self.open = 0
        self.most_open = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self.open += 1
                self.most_open = max(self.most_open, self.open)
            server = socket.create_connection(self.upstream)
            done = threading.Event()
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b, done), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, done: threading.Event) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            if not done.is_set():
                done.set()
                with self._lock:
                    self.open -= 1

    def close(self) -> None:
        self.listener.close()


def test_connections_are_pooled_and_bounded(tls_cluster: TlsCluster, bucket: str) -> None:
    proxy = CountingProxy(tls_cluster.urls[0])
    try:
        client = ringkv.Client(proxy.url, ca_file=str(tls_cluster.ca), ring_refresh=0, bucket=bucket, max_connections=4)
        for i in range(100):
            client.put(f"seq-{i}", b"v")
            assert client.get(f"seq-{i}").values == [b"v"]
        # 200 requests one after another: one keep-alive connection.
        assert proxy.accepted == 1 and client.connections_opened() == {proxy.url: 1}

        errors: List[BaseException] = []

        def work(worker: int) -> None:
            try:
                for i in range(25):
                    key = f"w{worker}-{i}"
                    client.put(key, key.encode())
                    assert client.get(key).values == [key.encode()]
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        # 8 threads, 400 requests, at most 4 connections at once and at most 4 ever opened.
        assert proxy.most_open <= 4 and proxy.accepted <= 4
        assert sum(client.connections_opened().values()) == proxy.accepted
    finally:
        proxy.close()


# ----- asyncio -----


def test_the_asyncio_client_over_tls(tls_cluster: TlsCluster, certs: Certs, silent: SilentServer, bucket: str) -> None:
    ca = str(tls_cluster.ca)

    async def scenario() -> None:
        async with ringkv.aio.AsyncClient(tls_cluster.urls[0], ca_file=ca, bucket=bucket, max_connections=8) as db:
            ring = await db.refresh_ring()
            keys = [f"a{i}" for i in range(200)]
            puts = await asyncio.gather(*(db.put(key, key.encode()) for key in keys))
            gets = await asyncio.gather(*(db.get(key) for key in keys))
            for key, put, got in zip(keys, puts, gets):
                owner = owner_of(ring, bucket.encode(), key.encode())
                assert put.node == owner and got.node == owner and got.values == [key.encode()]
            assert {p.node for p in puts} == {"n1", "n2", "n3"}
            opened = db.connections_opened()
            assert set(opened) == set(tls_cluster.urls) and all(1 <= n <= 8 for n in opened.values())
            m = await db.mget(keys[:50])
            assert m.complete and all(m[key].values == [key.encode()] for key in keys[:50])
            listed = [key async for key in db.iter_keys(page_size=70)]
            assert sorted(listed) == sorted(key.encode() for key in keys)
            updated = await db.put("a1", b"new", context=gets[1].context)
            watched = await db.watch("a1", gets[1].context, timeout=5)
            assert watched.changed and watched.values == [b"new"] and watched.context == updated.context
            assert (await db.delete("a2")).ok and (await db.get("a2")).values == []
        # A wrong CA: refused, nothing sent.
        wrong = ringkv.aio.AsyncClient(tls_cluster.urls, ca_file=str(certs.other_ca))
        try:
            await wrong.get("k")
            raise AssertionError("a certificate from another CA was accepted")
        except ringkv.TlsError as error:
            assert "certificate verify failed" in str(error)
        # A write sent to a node that never answers is not sent again, not even elsewhere.
        hanging = ringkv.aio.AsyncClient([silent.url, tls_cluster.urls[0]], ca_file=ca, ring_refresh=0, timeout=0.5)
        try:
            await hanging.put("hung", b"v", bucket=bucket)
            raise AssertionError("the put did not time out")
        except ringkv.RequestTimeoutError as error:
            assert "may or may not have been applied" in str(error)
        assert [r.split(b" ")[0] for r in silent.requests] == [b"PUT"]
        check = ringkv.aio.AsyncClient(tls_cluster.urls[0], ca_file=ca, ring_refresh=0, bucket=bucket)
        assert (await check.get("hung")).values == []
        # A read is retried on the next node.
        reader = ringkv.aio.AsyncClient([silent.url, tls_cluster.urls[0]], ca_file=ca, ring_refresh=0, timeout=0.5)
        assert (await reader.get("a3", bucket=bucket)).values == [b"a3"]
        assert [r.split(b" ")[0] for r in silent.requests] == [b"PUT", b"GET"]
        for client in (check, reader, hanging, wrong):
            await client.aclose()

    asyncio.run(scenario())


# ----- the policy, table by table -----


def test_the_retry_policy_is_the_rust_clients() -> None:
    table = {
        (Idempotence.IDEMPOTENT, FailureKind.CONNECT): RetryDecision.TRY_NEXT_NODE,
        (Idempotence.IDEMPOTENT, FailureKind.TIMEOUT): RetryDecision.TRY_NEXT_NODE,
        (Idempotence.IDEMPOTENT, FailureKind.BROKEN): RetryDecision.TRY_NEXT_NODE,
        (Idempotence.AT_MOST_ONCE, FailureKind.CONNECT): RetryDecision.TRY_NEXT_NODE,
        (Idempotence.AT_MOST_ONCE, FailureKind.TIMEOUT): RetryDecision.OUTCOME_UNKNOWN,
        (Idempotence.AT_MOST_ONCE, FailureKind.BROKEN): RetryDecision.OUTCOME_UNKNOWN,
    }
    for (idempotence, failure), decision in table.items():
        assert retry_decision(idempotence, failure) is decision


def test_the_routing_table_and_the_order_of_targets() -> None:
    source = normalize_node_url("https://db1:8087")
    doc = {
        "version": 9,
        "partition_count": 4,
        "members": [
            {"id": "a", "status": "up", "alive": True, "http_addr": "0.0.0.0:8087"},
            {"id": "b", "status": "up", "alive": True, "http_addr": "db2:8087"},
            {"id": "c", "status": "up", "alive": False, "http_addr": "db3:8087"},  # down: never routed to
            {"id": "d", "status": "leaving", "alive": True, "http_addr": "db4:8087"},
        ],
        "partitions": [{"id": i, "replicas": ["c", "b", "a", "d"][i:] + ["c", "b", "a", "d"][:i]} for i in range(4)],
    }
    table = RoutingTable(doc, source)
    assert table.version == 9
    assert [e.url for e in table.members] == ["https://db1:8087", "https://db2:8087", "https://db4:8087"]
    for key in (b"x", b"y", b"z"):
        partition = _native.key_partition(b"b", key, 4)
        expected = [r for r in (["c", "b", "a", "d"][partition:] + ["c", "b", "a", "d"][:partition]) if r != "c"]
        urls = {"a": "https://db1:8087", "b": "https://db2:8087", "d": "https://db4:8087"}
        assert [e.url for e in table.replicas_for(b"b", key)] == [urls[r] for r in expected]
    with pytest.raises(ringkv.ServerError, match="power of two"):
        RoutingTable(dict(doc, partition_count=3), source)
    with pytest.raises(ringkv.ServerError, match="listed twice"):
        RoutingTable(dict(doc, partitions=[doc["partitions"][0]] * 4), source)
    a, b, c, d = (Endpoint("http", "h", p) for p in (1, 2, 3, 4))
    # Replicas first, then the configured nodes from the rotation, then other members; suspects last.
    assert plan_targets([c, a], [a, b], 1, [a, b, c, d], lambda e: False) == [c, a, b, d]
    assert plan_targets([c, a], [a, b], 0, [a, b, c, d], lambda e: e == c) == [a, b, d, c]
    assert plan_targets([], [a, b], 3, [], lambda e: False) == [b, a]


def test_client_settings_are_checked() -> None:
    client = ringkv.Client(["db1:8087", "https://db2:8443/", "db1:8087"], ring_refresh=0)
    assert client.nodes == ["http://db1:8087", "https://db2:8443"]
    assert client.replicas_for("k") == [] and client.ring_version is None
    for bad, error in (
        (lambda: ringkv.Client(["db1:8087", 7]), TypeError),  # type: ignore[list-item]
        (lambda: ringkv.Client("db1", timeout=-1), ringkv.InvalidRequestError),
        (lambda: ringkv.Client("db1", connect_timeout=0), ringkv.InvalidRequestError),
        (lambda: ringkv.Client("db1", backoff=-1), ringkv.InvalidRequestError),
        (lambda: ringkv.aio.AsyncClient("gopher://db1"), ringkv.InvalidRequestError),
    ):
        with pytest.raises(error):
            bad()
    with pytest.raises(ringkv.InvalidRequestError, match="request_timeout"):
        ringkv.Client("http://127.0.0.1:1", ring_refresh=0).get("k", request_timeout=0)


def test_a_value_over_the_limit_is_refused_unsent() -> None:
    unreachable = _closed_port_url().replace("https", "http")
    client = ringkv.Client(unreachable, ring_refresh=0)
    with pytest.raises(ringkv.InvalidRequestError, match="nothing was sent"):
        client.put("k", bytes(_native.DEFAULT_MAX_VALUE_BYTES + 1))
    small = ringkv.Client(unreachable, ring_refresh=0, max_value_bytes=4)
    with pytest.raises(ringkv.InvalidRequestError, match="5 bytes is over the limit of 4"):
        small.put("k", b"12345")
    with pytest.raises(ringkv.UnavailableError):  # at the limit: sent (and the node is not there)
        small.put("k", b"1234")
    with pytest.raises(ringkv.InvalidRequestError, match="over the limit"):
        asyncio.run(ringkv.aio.AsyncClient(unreachable, ring_refresh=0, max_value_bytes=4).put("k", b"12345"))



def test_without_a_ring_the_configured_nodes_take_turns() -> None:
    """Nodes that cannot give a ring (503 no_ring): requests still go out, spread over the
    configured nodes in turn."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: Dict[int, List[str]] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            port = self.server.server_address[1]
            seen.setdefault(port, []).append(f"{self.command} {self.path.split('?')[0]}")
            if self.path == "/ring":
                body = json.dumps({"error": "no ring yet", "kind": "no_ring"}).encode()
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
            else:
                body = b""
                self.send_response(204)
                self.send_header("X-Ringkv-Node", f"n{port}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = _answer

        def log_message(self, *args: object) -> None:
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = ringkv.Client([f"http://127.0.0.1:{s.server_address[1]}" for s in servers], ring_refresh=3600)
        nodes = {client.put(f"k{i}", b"v").node for i in range(20)}
        assert len(nodes) == 2 and client.ring_version is None and client.replicas_for("k0") == []
        puts = [sum(r.startswith("PUT") for r in requests) for requests in seen.values()]
        # One background ring read, which took a turn of the rotation: a node without a ring
        # sends a read on to the next node, so it asked each node once.
        assert [sum(r == "GET /ring" for r in requests) for requests in seen.values()] == [1, 1]
        assert sorted(puts) in ([10, 10], [9, 11])
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


class ClosingServer:
    """Plain HTTP/1.1: answers each request with a keep-alive 204, then closes the connection
    (as a server's idle timeout does). Counts connections and requests."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.requests: List[bytes] = []
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
            )
            while len(body) < length:
                body += conn.recv(65536)
            self.requests.append(head.split(b"\r\n")[0])
            conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-Ringkv-Node: n1\r\n\r\n")
            conn.close()
            self.closed.set()

    def close(self) -> None:
        self.listener.close()


def test_a_pooled_connection_the_server_closed_is_not_used_for_a_write() -> None:
    """A keep-alive connection the server closed while idle is found closed before the next
    request is written: the write goes out on a new connection, once, and succeeds."""
    server = ClosingServer()
    try:
        client = ringkv.Client(server.url, ring_refresh=0)
        for i in range(3):
            server.closed.clear()
            assert client.put(f"k{i}", b"v").ok
            assert server.closed.wait(5)
            time.sleep(0.05)  # let the FIN arrive
        assert server.connections == 3 and len(server.requests) == 3
        assert client.connections_opened() == {server.url: 3}

        async def scenario() -> None:
            db = ringkv.aio.AsyncClient(server.url, ring_refresh=0)
            for i in range(3):
                server.closed.clear()
                assert (await db.put(f"a{i}", b"v")).ok
                assert server.closed.wait(5)
                await asyncio.sleep(0.05)  # the loop reads the FIN
            assert db.connections_opened() == {server.url: 3}
            await db.aclose()

        asyncio.run(scenario())
        assert server.connections == 6 and [r.split(b" ")[0] for r in server.requests] == [b"PUT"] * 6
    finally:
        server.close()


def test_the_async_pool_never_loses_a_slot_to_a_timeout_or_a_cancellation() -> None:
    from ringkv.aio import _acquire_within

    async def scenario() -> int:
        slots = asyncio.Semaphore(2)
        for _ in range(200):
            # Both slots taken: every wait times out, and whatever races with the timeout
            # (a release just as the wait ends) must not leave a slot taken by nobody.
            await slots.acquire()
            await slots.acquire()
            asyncio.get_running_loop().call_later(0.001, slots.release)
            got = await _acquire_within(slots, 0.001)
            if got:
                slots.release()
            slots.release()
            await asyncio.sleep(0.002)
            # A waiter cancelled from outside while the slot comes free.
            await slots.acquire()
            waiter = asyncio.ensure_future(_acquire_within(slots, 5.0))
            await asyncio.sleep(0)
            slots.release()
            waiter.cancel()
            try:
                if await waiter:
                    slots.release()
            except asyncio.CancelledError:
                pass
            await asyncio.sleep(0)
            await slots.acquire()  # settle: both slots must be free again
            await slots.acquire()
            slots.release()
            slots.release()
        return slots._value  # noqa: SLF001 - the count is what this test is about

    assert asyncio.run(scenario()) == 2
