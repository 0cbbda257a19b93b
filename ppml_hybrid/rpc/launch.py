"""Start a service as its own process and learn its address from its ready line.

Parent: :func:`spawn` runs ``python -m <module>``, writes the launch spec (JSON; it may hold
client private keys, so it goes over the stdin pipe, never to disk), and waits for one stdout
line ``PPML_READY {json}`` with the bound address and the service's TLS trust certificate.
Child: :func:`read_spec` and :func:`announce_ready` (or :func:`announce_failure`: one line
``PPML_FAILED {json}`` with the project error's type and message, so the parent's error says
why the service refused to start, e.g. a rejected attestation). Logs go to stderr; stdout
carries only those lines.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ppml_hybrid.rpc.errors import UnavailableError

log = logging.getLogger(__name__)
READY = "PPML_READY "
FAILED = "PPML_FAILED "


@dataclass(frozen=True)
class ReadyInfo:
    """What a started service tells its parent."""

    address: str
    trust_pem: bytes
    extra: Mapping[str, Any] = field(default_factory=dict)


class ServiceProcess:
    """A running service process; :meth:`stop` ends it (and only it)."""

    def __init__(self, *, name: str, proc: subprocess.Popen, ready: ReadyInfo) -> None:
        self.name = name
        self.proc = proc
        self.ready = ready

    @property
    def address(self) -> str:
        return self.ready.address

    @property
    def trust_pem(self) -> bytes:
        return self.ready.trust_pem

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, *, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout_s)
        for stream in (self.proc.stdout, self.proc.stdin):
            if stream is not None and not stream.closed:
                stream.close()

    def __enter__(self) -> "ServiceProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def child_env(extra: Optional[Mapping[str, str]] = None) -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # one thread per process: openfhe reads it at import
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


SERVICE_LOG_ENV = "PPML_HYBRID_SERVICE_LOG"


def configure_service_logging(tag: str) -> None:
    """A service's logging: with ``$PPML_HYBRID_SERVICE_LOG`` (set by a launcher), everything
    from INFO into that file and only warnings to stderr (the user's console stays readable);
    without it (a service an operator runs by hand), INFO to stderr."""
    fmt = logging.Formatter(f"%(asctime)s {tag} %(levelname)s %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    path = os.environ.get(SERVICE_LOG_ENV)
    if path:
        console.setLevel(logging.WARNING)
        to_file = logging.FileHandler(path, encoding="utf-8")
        to_file.setFormatter(fmt)
        root.addHandler(to_file)
    root.addHandler(console)


def spawn(*, name: str, module: str, spec: Mapping[str, Any], timeout_s: float,
          env: Optional[Mapping[str, str]] = None, log_file: Optional[str] = None) -> ServiceProcess:
    """Start ``python -m module``, hand it ``spec``, wait for its ready line. ``log_file``: the
    service's INFO log goes there and only its warnings to this console."""
    extra = dict(env or {})
    if log_file:
        extra[SERVICE_LOG_ENV] = log_file
    proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=child_env(extra), text=True)
    try:
        proc.stdin.write(json.dumps(spec))
        proc.stdin.close()
        line = _read_ready(proc, timeout_s)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    raw = json.loads(line[len(READY):])
    ready = ReadyInfo(address=raw.pop("address"), trust_pem=raw.pop("trust_pem").encode(), extra=raw)
    log.info("%s started (pid %d) at %s", name, proc.pid, ready.address)
    return ServiceProcess(name=name, proc=proc, ready=ready)


def _read_ready(proc: subprocess.Popen, timeout_s: float) -> str:
    box: dict = {}

    def reader() -> None:
        for raw in proc.stdout:
            if raw.startswith(READY):
                box["line"] = raw.strip()
                return
            if raw.startswith(FAILED):
                box["failure"] = json.loads(raw[len(FAILED):])
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout_s)
    if "failure" in box:
        proc.wait(timeout=10)
        f = box["failure"]
        raise UnavailableError(f"{proc.args[-1]} refused to start: {f.get('type')}: {f.get('message')}")
    if "line" not in box:
        if proc.poll() is None:
            raise UnavailableError(f"{proc.args[-1]} did not report ready within {timeout_s:.0f} s")
        raise UnavailableError(f"{proc.args[-1]} exited with status {proc.returncode} before it was ready (see its stderr)")
    return box["line"]


def read_spec() -> dict:
    return json.loads(sys.stdin.read())


def announce_failure(exc: BaseException) -> None:
    """Child side: tell the parent why this service did not start (type and message only)."""
    sys.stdout.write(FAILED + json.dumps({"type": type(exc).__name__, "message": str(exc)}) + "\n")
    sys.stdout.flush()


def announce_ready(*, address: str, trust_pem: bytes, **extra: Any) -> None:
    sys.stdout.write(READY + json.dumps({"address": address, "trust_pem": trust_pem.decode(), **extra}) + "\n")
    sys.stdout.flush()
