"""Start E as its own process (what the orchestrator calls, after K is up)."""

from __future__ import annotations

from typing import Optional

from ppml_hybrid.he_stage.evaluator.spec import EvaluatorSpec
from ppml_hybrid.rpc.launch import ServiceProcess, spawn


def spawn_evaluator(*, spec: EvaluatorSpec, timeout_s: float = 600.0, log_file: Optional[str] = None) -> ServiceProcess:
    """Start ``python -m ppml_hybrid.he_stage.evaluator``; returns once E has K's public material and listens.

    OpenFHE reads its thread count at import: ``he.evaluator_threads`` goes into E's environment,
    with passive OpenMP waiting so idle threads sleep instead of spinning beside the parties.
    """
    threads = str(spec.run.he.evaluator_threads)
    return spawn(name="HE evaluator", module="ppml_hybrid.he_stage.evaluator", spec=spec.to_json(), timeout_s=timeout_s,
                 env={"OMP_NUM_THREADS": threads, "OMP_WAIT_POLICY": "PASSIVE"}, log_file=log_file)
