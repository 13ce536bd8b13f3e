#!/usr/bin/env python3
"""Figures of the session API against a running cluster (stdlib only; see session_api.sh).

    session_api.py list  HOST:PORT BUCKET        walk a bucket's listing, print keys and seconds
    session_api.py list-for HOST:PORT BUCKET SECS  walk it again and again for SECS seconds
    session_api.py mget  HOST:PORT BUCKET ROUNDS  100-key multi-get against 100 gets, interleaved
    session_api.py watch HOST:PORT ROUNDS         time from a write's ack to its watcher's answer

Each prints one JSON line.
"""
import http.client
import json
import statistics
import sys
import threading
import time


def connect(address):
    host, port = address.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=120)


def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.getheader("x-ringkv-context"), response.read()


def walk_forever(address, bucket, seconds):
    """Walks the listing again and again for `seconds`; prints the walks and their mean time."""
    until = time.monotonic() + seconds
    walks, spent = 0, 0.0
    while time.monotonic() < until:
        started = time.monotonic()
        walk(address, bucket, quiet=True)
        spent += time.monotonic() - started
        walks += 1
    print(json.dumps({"walks": walks, "mean_seconds": round(spent / max(walks, 1), 3)}))


def walk(address, bucket, quiet=False):
    conn = connect(address)
    started = time.monotonic()
    keys, pages, cursor = 0, 0, None
    while True:
        path = f"/kv/{bucket}?list&limit=1000" + (f"&cursor={cursor}" if cursor else "")
        status, _, body = request(conn, "GET", path)
        if status != 200:
            raise SystemExit(f"listing answered {status}: {body[:200]!r}")
        page = json.loads(body)
        keys += len(page["keys"])
        pages += 1
        cursor = page["cursor"]
        if cursor is None:
            break
    if not quiet:
        print(json.dumps({"keys": keys, "pages": pages, "seconds": round(time.monotonic() - started, 3)}))


def mget(address, bucket, rounds):
    conn = connect(address)
    keys = [f"key-{i}" for i in range(100)]
    for key in keys:
        request(conn, "PUT", f"/kv/{bucket}/{key}", body=b"x" * 100)
    singles, many = [], []
    for _ in range(rounds):
        started = time.monotonic()
        for key in keys:
            status, _, _ = request(conn, "GET", f"/kv/{bucket}/{key}")
            assert status == 200, status
        singles.append(time.monotonic() - started)
        started = time.monotonic()
        status, _, body = request(conn, "POST", f"/kv/{bucket}?mget", body=json.dumps({"keys": keys}))
        assert status == 200 and body.count(b"\n") == 101, (status, body[:200])
        many.append(time.monotonic() - started)
    a, b = statistics.median(singles), statistics.median(many)
    print(json.dumps({"gets_100_ms": round(a * 1000, 2), "mget_100_ms": round(b * 1000, 2), "ratio": round(b / a, 3)}))


def watch(address, rounds):
    """A watcher waits on a key; a writer writes it. Times are from the write's sending: when
    its ack came back, and when the watcher had its answer (an owner tells the watcher as soon
    as it stores the write, which can be before the coordinator has its W acks)."""
    writer = connect(address)
    acks, answers = [], []
    for i in range(rounds):
        key = f"/kv/watched/k{i % 10}"
        request(writer, "PUT", key, body=b"start")
        _, context, _ = request(writer, "GET", key)
        answered = {}

        def watcher():
            conn = connect(address)
            status, _, _ = request(conn, "GET", f"{key}?changed_since={context}&timeout_ms=10000")
            answered["at"], answered["status"] = time.monotonic(), status

        thread = threading.Thread(target=watcher)
        thread.start()
        time.sleep(0.1)
        sent = time.monotonic()
        request(writer, "PUT", key, body=b"changed", headers={"X-Ringkv-Context": context})
        acked = time.monotonic()
        thread.join()
        assert answered["status"] == 200, answered
        acks.append(acked - sent)
        answers.append(answered["at"] - sent)
    ms = lambda xs, q: round(sorted(xs)[int(q * (len(xs) - 1))] * 1000, 2)
    print(json.dumps({
        "rounds": rounds,
        "write_ack_median_ms": ms(acks, 0.5),
        "watch_answer_median_ms": ms(answers, 0.5),
        "watch_answer_p99_ms": ms(answers, 0.99),
        "answer_minus_ack_median_ms": round(statistics.median(a - b for a, b in zip(answers, acks)) * 1000, 2),
    }))


if __name__ == "__main__":
    command, address = sys.argv[1], sys.argv[2]
    if command == "list":
        walk(address, sys.argv[3])
    elif command == "list-for":
        walk_forever(address, sys.argv[3], float(sys.argv[4]))
    elif command == "mget":
        mget(address, sys.argv[3], int(sys.argv[4]))
    elif command == "watch":
        watch(address, int(sys.argv[3]))
    else:
        raise SystemExit(__doc__)
