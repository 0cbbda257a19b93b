"""Start K as its own process (what the orchestrator calls)."""

from __future__ import annotations

from typing import Optional

from ppml_hybrid.keyservice.spec import KeyServiceSpec
from ppml_hybrid.rpc.launch import ServiceProcess, spawn


def spawn_key_service(*, spec: KeyServiceSpec, log_file: Optional[str] = None) -> ServiceProcess:
    """Start ``python -m ppml_hybrid.keyservice``; returns once K has its keys and listens.

    The returned handle has K's ``address``, the ``trust_pem`` clients pin, and
    ``ready.extra["public_material_sha256"]``; ``stop()`` ends the process.
    """
    return spawn(name="key service", module="ppml_hybrid.keyservice", spec=spec.to_json(),
                 timeout_s=spec.keyservice.startup_timeout_s, log_file=log_file)
