"""Ray clusters for the distributed tests: a local one started in-process (``ray.init``) and a head plus a
second node started with ``ray start`` on loopback. Both are small (2 CPUs in all, a 200 MiB object store,
no dashboard), use temp folders and ports of their own, and are stopped by the fixture that started them:
``ray start --block`` processes are ended by their pid, which makes them stop the processes they started."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the ray extra (lsr-search[ray]) is not installed")

OBJECT_STORE = 200 * 1024**2
RAY_BIN = Path(sys.executable).with_name("ray")


def _temp_dir() -> Path:
    # short: Ray's unix socket paths live under it and must stay below 108 bytes
    return Path(tempfile.mkdtemp(prefix="lsrray-", dir="/tmp"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_local():
    """An in-process local cluster: ``ray.init(num_cpus=2)``."""
    if ray.is_initialized():
        ray.shutdown()
    temp = _temp_dir()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=OBJECT_STORE, _temp_dir=str(temp),
             log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _start_node(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    ports = ["--node-manager-port", str(_free_port()), "--object-manager-port", str(_free_port()),
             "--metrics-export-port", str(_free_port()), "--dashboard-agent-listen-port", str(_free_port()),
             "--dashboard-agent-grpc-port", str(_free_port()), "--runtime-env-agent-port", str(_free_port()),
             "--min-worker-port", "0", "--max-worker-port", "0"]
    with open(log, "ab") as out:
        return subprocess.Popen([str(RAY_BIN), "start", "--block", "--num-cpus", "1", "--node-ip-address",
                                 "127.0.0.1", "--object-store-memory", str(OBJECT_STORE // 2),
                                 "--disable-usage-stats", *ports, *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # `ray start --block` then stops the Ray processes it started
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what it started
            proc.wait(10)


@pytest.fixture(scope="module")
def ray_two_nodes(tmp_path_factory):
    """A head and a second node, one CPU each, started with ``ray start`` on 127.0.0.1. Yields
    ``(address, env)``: drivers run as subprocesses with ``env``, which carries the cluster's own
    authentication token (Ray reads its auth settings once per process, so this process cannot join)."""
    temp = _temp_dir()
    logs = tmp_path_factory.mktemp("ray-logs")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    procs = [_start_node(["--head", "--port", str(port), "--include-dashboard=false", "--temp-dir", str(temp)],
                         logs / "head.log", env)]
    try:
        _wait(lambda: _listening(port), 90, logs / "head.log", procs[0])
        procs.append(_start_node(["--address", address], logs / "worker.log", env))
        _wait(lambda: "Ray runtime started" in (logs / "worker.log").read_text(), 90, logs / "worker.log", procs[1])
        yield address, env
    finally:
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(temp, ignore_errors=True)


def _listening(port: int) -> bool:
    """The head's GCS accepts connections (``ray.init`` on a dead address would retry for minutes)."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(ready, timeout: float, log: Path, proc: subprocess.Popen) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}: {log.read_text()[-2000:]}")
        if ready():
            return
        time.sleep(0.5)
    raise RuntimeError(f"the Ray node did not come up in {timeout}s: {log.read_text()[-2000:]}")
