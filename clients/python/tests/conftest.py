"""Starts a real `quiver serve` (the debug binary; QUIVER_BIN overrides) on a free UDP port with
`--http none`, data in a temporary directory, and hands tests its address and CA."""

from __future__ import annotations

import asyncio
import os
import pathlib
import queue
import re
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterator, TypeVar

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
BIN = pathlib.Path(os.environ.get("QUIVER_BIN", ROOT / "target" / "debug" / "quiver"))
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
T = TypeVar("T")


@dataclass
class Broker:
    addr: str
    ca: str
    data_dir: pathlib.Path
    proc: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)

    def cli(self, *args: str, stdin: str = "") -> str:
        """Runs a `quiver` client command (the Rust client) against this broker."""
        out = subprocess.run(
            [str(BIN), *args], capture_output=True, text=True, timeout=60, input=stdin,
            env={**os.environ, "QUIVER_SERVER": self.addr, "QUIVER_CA": self.ca},
        )
        assert out.returncode == 0, f"quiver {' '.join(args)} failed: {out.stderr}"
        return out.stdout

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_broker(tmp: pathlib.Path, *flags: str) -> Broker:
    assert BIN.exists(), f"{BIN} is missing: run `cargo build -p quiver-cli` first"
    data = tmp / "data"
    proc = subprocess.Popen(
        [str(BIN), "serve", "--listen", "127.0.0.1:0", "--http", "none", "--data-dir", str(data), *flags],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"},
    )
    lines: "queue.Queue[str]" = queue.Queue()
    log: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            line = ANSI.sub("", line)
            log.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    addr = None
    while addr is None:
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            proc.kill()
            raise RuntimeError("broker did not print its address:\n" + "".join(log))
        m = re.search(r"quiver listening.* addr=(\S+)", line)
        if m:
            addr = m.group(1)
    return Broker(addr, str(data / "tls" / "ca.pem"), data, proc, log)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = start_broker(tmp_path_factory.mktemp("broker"))
    yield b
    b.stop()


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def run(coro: Awaitable[T], timeout: float = 60) -> T:
    """Runs one test coroutine with a deadline (a hung test fails instead of blocking the run)."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())
