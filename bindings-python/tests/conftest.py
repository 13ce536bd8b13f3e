"""Shared fixtures: seeds (printed, so a failing run can be replayed) and a live `ringkv dev`
cluster for the client tests."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator, List

import pytest

REPO = Path(__file__).resolve().parents[2]


def pytest_report_header(config: pytest.Config) -> str:
    return f"ringkv seeds: RINGKV_SEED={os.environ.get('RINGKV_SEED', '(default per test)')}"


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """The test's seed: RINGKV_SEED when set, else a fixed one derived from the test's name.
    Printed, so pytest shows it with any failure; replay with RINGKV_SEED=<seed> pytest -k <test>."""
    if "RINGKV_SEED" in os.environ:
        value = int(os.environ["RINGKV_SEED"])
    else:
        value = sum(request.node.name.encode()) * 7919 % 100_000
    print(f"seed = {value}  (replay: RINGKV_SEED={value} pytest -k '{request.node.name}')")
    return value


def seeds(count: int = 5) -> List[int]:
    """Seeds for campaign tests: RINGKV_SEED alone, or `count` fixed ones (RINGKV_SEEDS=<n> for more)."""
    if "RINGKV_SEED" in os.environ:
        return [int(os.environ["RINGKV_SEED"])]
    return list(range(1, int(os.environ.get("RINGKV_SEEDS", count)) + 1))


# ----- a live cluster -----


@pytest.fixture
def bucket() -> str:
    """A fresh bucket per test, so tests never see each other's keys."""
    return f"t-{uuid.uuid4().hex[:12]}"


def ringkv_binary() -> Path:
    explicit = os.environ.get("RINGKV_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("RINGKV_TARGET_DIR", REPO / "target"))
    return target / "debug" / "ringkv"


def _free_run(count: int, avoid: List[int]) -> int:
    """The first of `count` consecutive loopback ports that are free now."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 60_000)
        ports = range(base, base + count)
        if any(p in avoid for p in ports):
            continue
        sockets = []
        try:
            for port in ports:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free run of loopback ports found")


def _settled(urls: List[str]) -> bool:
    """Every node is healthy and sees every member up, on the same ring version."""
    versions = set()
    try:
        for url in urls:
            with urllib.request.urlopen(url + "/health", timeout=1) as answer:
                if answer.status != 200:
                    return False
            with urllib.request.urlopen(url + "/cluster", timeout=1) as answer:
                status = json.loads(answer.read())
            members = status.get("members", [])
            if len(members) != len(urls) or any(m.get("status") != "up" for m in members):
                return False
            versions.add(status.get("ring_version"))
    except (OSError, ValueError):
        return False
    return len(versions) == 1 and None not in versions


class DevCluster:
    def __init__(self, urls: List[str], process: "subprocess.Popen[bytes]", log: Path) -> None:
        self.urls = urls
        self.process = process
        self.log = log


@pytest.fixture(scope="session")
def dev_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    """`ringkv dev` with 3 nodes on free ports; stopped at the end of the session."""
    binary = ringkv_binary()
    if not binary.exists():
        pytest.fail(
            f"{binary} is missing: build it with `cargo build -p ringkv` (or set RINGKV_BIN); "
            "bindings-python/test.sh does this for you"
        )
    nodes = 3
    port = _free_run(nodes, [])
    peer_port = _free_run(nodes, list(range(port, port + nodes)))
    log = tmp_path_factory.mktemp("ringkv-dev") / "dev.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(binary), "dev", "--nodes", str(nodes), "--port", str(port), "--peer-port", str(peer_port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    urls = [f"http://127.0.0.1:{port + i}" for i in range(nodes)]
    try:
        deadline = time.monotonic() + 90
        while not _settled(urls):
            if process.poll() is not None:
                pytest.fail(f"ringkv dev exited with {process.returncode}:\n{log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                pytest.fail(f"ringkv dev did not settle within 90 s:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
        yield DevCluster(urls, process, log)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        sys.stdout.write(f"\nringkv dev log: {log}\n")
