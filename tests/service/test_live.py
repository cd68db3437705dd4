"""A real gunicorn server: kill -9 in the middle of a document add, and readers during reloads."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from lsr.index import IndexWriter, open_index
from tests.service.conftest import API_KEY

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port: int, method: str, path: str, body=None, timeout: float = 30.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json", "X-API-Key": API_KEY})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Server:
    def __init__(self, index, tmp_path, workers: int = 2):
        self.port = free_port()
        key_file = tmp_path / "key"
        key_file.write_text(API_KEY)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lsr.cli", "-q", "serve", str(index), "--port", str(self.port), "--workers",
             str(workers), "--api-key-file", str(key_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if call(self.port, "GET", "/readyz", timeout=2)[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.kill()
        raise RuntimeError("the server did not become ready")

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def big_add(n: int, start: int) -> dict:
    tokens = ["cell", "protein", "virus", "sleep", "diet", "brain"]
    # weights within the tiny model's bound (~1.03), which the default uint8 index stores up to
    return {"documents": [{"id": f"bulk{start + i}", "vector": {tokens[i % 6]: 0.3 + 0.1 * (i % 7),
                                                                tokens[(i + 1) % 6]: 0.2}}
                          for i in range(n)]}


@pytest.mark.parametrize("delay", [0.02, 0.08, 0.2, 0.5])
def test_kill_9_during_an_add_leaves_old_or_new_index(index_copy, tmp_path, delay):
    before = open_index(index_copy)
    old_docs, old_generation = before.n_live, before.manifest.generation
    server = Server(index_copy, tmp_path)
    outcome = {}
    adder = threading.Thread(target=lambda: outcome.update(result=_try(lambda: call(server.port, "POST",
                                                                                       "/v1/documents",
                                                                                       big_add(1000, 0)))))
    adder.start()
    time.sleep(delay)
    server.kill()
    adder.join()
    after = open_index(index_copy)  # must open: old or new state, never broken
    assert (after.n_live, after.manifest.generation) in {(old_docs, old_generation), (old_docs + 1000,
                                                                                     old_generation + 1)}
    ids = [after.internal_id(f"bulk{i}") is not None for i in range(1000)]
    assert all(ids) or not any(ids)  # a commit is all or nothing
    # the dead writer's lock and temporary files are cleaned up (a worker killed inside fsync holds its lock
    # until the kernel lets it die: wait a little for that)
    with IndexWriter.open(index_copy, lock_wait_s=10) as writer:
        writer.delete(["doc1"])
    assert not [p for p in index_copy.iterdir() if p.name.endswith(".tmp")]


def _try(fn):
    try:
        return fn()
    except OSError as exc:  # the connection dies with the server
        return exc


def test_readers_see_no_errors_during_reloads(index_copy, tmp_path):
    server = Server(index_copy, tmp_path)
    errors, answered, stop = [], [0], threading.Event()

    def reader():
        while not stop.is_set():
            status, body = call(server.port, "POST", "/v1/search", {"query": "cell protein", "k": 5})
            if status != 200:
                errors.append((status, body))
            answered[0] += 1

    readers = [threading.Thread(target=reader) for _ in range(4)]
    try:
        for t in readers:
            t.start()
        generations = []
        for round_ in range(5):
            status, body = call(server.port, "POST", "/v1/documents", big_add(50, 50 * round_))
            assert status == 201, body
            generations.append(body["generation"])
        time.sleep(1.0)
    finally:
        stop.set()
        for t in readers:
            t.join()
        server.kill()
    assert not errors and answered[0] > 20
    assert generations == sorted(generations) and len(set(generations)) == 5
    assert open_index(index_copy).n_live == 60 + 250
