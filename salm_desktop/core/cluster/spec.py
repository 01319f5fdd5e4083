"""``--cluster`` values: ``local:N[,memory=SIZE]``, a scheduler address, or a scheduler file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


class ClusterError(ValueError):
    """A cluster that cannot be used; the message says which and why (shown before any unit starts)."""


@dataclass(frozen=True)
class ClusterSpec:
    kind: str  # "local" | "address" | "scheduler-file"
    workers: int = 0  # local only
    memory: str | None = None  # local only: memory limit per worker ("4GB"); None = machine memory / workers
    address: str = ""  # address or scheduler file path

    def describe(self) -> str:
        if self.kind == "local":
            return f"a local cluster of {self.workers} worker process{'es' if self.workers != 1 else ''}"
        if self.kind == "scheduler-file":
            return f"the Dask scheduler of {self.address}"
        return f"the Dask scheduler at {self.address}"


_SIZE = re.compile(r"^\d+(\.\d+)?\s*(B|kB|KB|KiB|MB|MiB|GB|GiB|TB|TiB)$", re.IGNORECASE)
_ADDRESS = re.compile(r"^((tcp|tls|ws|wss|inproc|ucx)://)?[A-Za-z0-9_.\-\[\]:]+:\d+$")


def parse_cluster_spec(text: str) -> ClusterSpec:
    """``local:2``, ``local:4,memory=6GB``, ``tcp://10.0.0.5:8786``, ``host:8786`` or ``scheduler.json``."""
    text = (text or "").strip()
    if text.startswith("local:") or text == "local":
        body = text[len("local:"):] if text.startswith("local:") else ""
        count, *extras = [part.strip() for part in body.split(",")]
        if not count.isdigit() or int(count) < 1:
            raise ClusterError(f"--cluster {text!r}: expected local:N with N a number of worker processes >= 1 (e.g. local:2)")
        memory = None
        for extra in extras:
            key, _, value = extra.partition("=")
            if key.strip() != "memory" or not _SIZE.match(value.strip()):
                raise ClusterError(f"--cluster {text!r}: unknown option {extra!r} (expected memory=SIZE, e.g. memory=4GB)")
            memory = value.strip()
        return ClusterSpec("local", workers=int(count), memory=memory)
    if text.endswith(".json"):
        if not Path(text).expanduser().is_file():
            raise ClusterError(f"--cluster {text}: scheduler file not found")
        return ClusterSpec("scheduler-file", address=str(Path(text).expanduser()))
    if _ADDRESS.match(text):
        return ClusterSpec("address", address=text if "://" in text else f"tcp://{text}")
    raise ClusterError(f"--cluster {text!r}: expected local:N, a scheduler address (tcp://HOST:PORT) "
                       "or a scheduler file (scheduler.json)")
