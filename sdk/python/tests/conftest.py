"""A real `tinydevcrm serve` for the whole session, and a fresh user per test.

The server runs the binary from ``TDC_BIN`` (default ``target/debug/tinydevcrm`` under the
repository root) with ``TDC_DATA_DIR`` in a temporary directory, so it starts a PostgreSQL
cluster of its own, on a free port. Access tokens live ``ACCESS_TTL`` seconds, so that the
client's refresh is exercised by every test that runs longer than that, and by the tests meant
for it. ``server.restart()`` stops and starts the same process on the same port and data dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tinydevcrm import Client

REPO = Path(__file__).resolve().parents[3]
SDK = REPO / "sdk" / "python"
#: Seconds an access token lives on the test server.
ACCESS_TTL = 5
PASSWORD = "correct-horse-battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One `serve` process on a fixed port and data directory, restartable."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env.update(
            TDC_DATA_DIR=str(self.workdir / "data"),
            TDC_BIND=f"127.0.0.1:{self.port}",
            TDC_STREAM_BIND="",
            TDC_ACCESS_TOKEN_TTL_SECS=str(ACCESS_TTL),
            # Every test logs in from 127.0.0.1; the default 30 a minute would throttle the suite.
            TDC_LOGIN_PER_IP_PER_MINUTE="100000",
            RUST_LOG=os.environ.get("RUST_LOG", "warn"),
        )
        return env

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.binary), "serve"], env=self.env(), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"serve did not answer /health within 180 s:\n{self.tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def server_binary() -> Path:
    path = Path(os.environ.get("TDC_BIN") or REPO / "target" / "debug" / "tinydevcrm")
    if not path.is_file():
        raise RuntimeError(f"no server binary at {path}: build it (cargo build) or set TDC_BIN")
    return path


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    binary = server_binary()
    workdir = Path(tempfile.mkdtemp(prefix="tdc-pysdk-"))
    # Run as root, the managed cluster runs as `postgres`, which must reach its data directory.
    workdir.chmod(0o755)
    srv = Server(binary, workdir)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def email() -> str:
    return f"py-{uuid.uuid4().hex[:12]}@example.com"


@pytest.fixture
def client(server: Server, email: str) -> Iterator[Client]:
    """A client logged in as a user of its own."""
    if server.process is None or server.process.poll() is not None:
        server.start()  # a failed restart test left it stopped: the other tests still run
    c = Client(server.url)
    c.register(email, PASSWORD)
    c.login(email, PASSWORD)
    try:
        yield c
    finally:
        c.close()
