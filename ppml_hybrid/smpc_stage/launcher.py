"""The orchestrator: start every party and the dealer on this machine, watch them, tear down.

Steps of :func:`run_parties`:

1. pick the rendezvous port (``smpc.master_port``; 0 = a free loopback port);
2. start the dealer (rank ``parties``) and the parties (ranks 0..parties-1) as separate OS
   processes (``forkserver``: no state inherited from the caller); party r gets only
   ``party_inputs[r]`` (its own hospital's rows);
3. watch: results arrive on a queue; a process that exits without a result, or raises, fails
   the run at once, naming it; if no party completes a communicator call (or heartbeat) for
   ``smpc.timeout_s`` seconds the run fails naming the party (or parties) that are not waiting
   on communication, i.e. the ones that hang;
4. on success and on failure every child is joined, then terminated/killed if still alive:
   no orphans. Children also exit by themselves when the orchestrator disappears.

Who learns what: the orchestrator sees only what the programs return (tests reveal outputs on
purpose; the pipeline's programs return metrics and opened, noised values only).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import queue as queue_mod
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ppml_hybrid.config import SMPCConfig
from ppml_hybrid.smpc_stage.errors import PartyCrashedError, PartyFailedError, PartyTimeoutError, RendezvousError
from ppml_hybrid.smpc_stage.party import ProgressBoard, dealer_main, party_main
from ppml_hybrid.smpc_stage.rendezvous import rendezvous_for
from ppml_hybrid.smpc_stage.transport import LinkShaping

log = logging.getLogger(__name__)

PRELOAD = ["torch", "ppml_hybrid.smpc_stage.party", "ppml_hybrid.smpc_stage.programs"]
POLL_S = 0.05
# After the first failure event, wait this long for the other processes' reports before
# deciding who caused it (a crash makes peers fail too, a moment later).
GRACE_S = 1.0
JOIN_S = 10.0


@dataclass(frozen=True)
class PartyRun:
    """Results of one orchestrated run: ``results[r]`` is party r's return value."""

    results: Tuple[Any, ...]
    wall_s: float
    pids: Tuple[int, ...] = field(default=())  # parties then dealer (for no-orphan checks)


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port free on ``address`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def run_parties(
    *,
    smpc: SMPCConfig,
    program: Callable[[Any, Any], Any],
    party_inputs: Sequence[Any],
    shaping: Optional[LinkShaping] = None,
    pids_out: Optional[List[int]] = None,
) -> PartyRun:
    """Run ``program(context, party_inputs[rank])`` in one process per party (steps: module doc).

    ``program`` must be picklable (a module-level function or a frozen dataclass with
    ``__call__``). ``pids_out``, if given, is filled with the child pids as they start (so a
    caller can check after a failure that none is left). Raises
    :class:`~ppml_hybrid.smpc_stage.errors.PartyFailedError` subclasses naming the party.
    """
    if len(party_inputs) != smpc.parties:
        raise RendezvousError(
            f"run_parties got inputs for {len(party_inputs)} parties but smpc.parties={smpc.parties}; "
            "give one entry (that party's own rows) per party"
        )
    if smpc.rank is not None:
        raise RendezvousError(
            f"smpc.rank={smpc.rank} is set: that is for running one party per host "
            "(ppml_hybrid.smpc_stage.party.run_party); leave it null for the local orchestrator"
        )
    port = smpc.master_port or free_port(smpc.master_addr)
    ctx = _process_context()
    n = smpc.parties
    board = ProgressBoard(
        last=ctx.Array("d", [time.time()] * n, lock=False),
        in_comm=ctx.Array("i", [0] * n, lock=False),
        ops=ctx.Array("q", [0] * n, lock=False),
    )
    results_q = ctx.Queue()
    parent = os.getpid()
    dealer = ctx.Process(
        target=dealer_main, args=(rendezvous_for(smpc, rank=n, port=port), parent), name="mpc-dealer", daemon=True
    )
    parties = [
        ctx.Process(
            target=party_main,
            args=(rendezvous_for(smpc, rank=r, port=port), program, pickle.dumps(party_inputs[r]), shaping, board, results_q, parent),
            name=f"mpc-party-{r}",
            daemon=True,
        )
        for r in range(n)
    ]
    procs = parties + [dealer]
    start = time.time()
    try:
        for p in procs:
            p.start()
            if pids_out is not None:
                pids_out.append(p.pid)
        for r in range(n):
            board.last[r] = time.time()
        results = _watch(parties, dealer, results_q, board, smpc.timeout_s)
        wall = time.time() - start
        _join_all(procs, JOIN_S)
        return PartyRun(results=tuple(results[r] for r in range(n)), wall_s=wall, pids=tuple(p.pid for p in procs))
    finally:
        _stop_all(procs)
        results_q.close()
        results_q.cancel_join_thread()


def _process_context() -> Any:
    """``forkserver``: children fork from a clean server that imported torch and CrypTen once.

    Nothing of the caller's state (threads, open sockets, CrypTen's config) is inherited, as
    with ``spawn``, but the ~4 s import is paid once per orchestrator process instead of once
    per child per run. (The preload list is the standard library's per-process setting.)
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _watch(parties: List[Any], dealer: Any, results_q: Any, board: ProgressBoard, timeout_s: float) -> Dict[int, Any]:
    n = len(parties)
    results: Dict[int, Any] = {}
    events: List[Tuple[str, int, str]] = []
    first_failure: Optional[float] = None
    while len(results) < n:
        try:
            kind, rank, payload = results_q.get(timeout=POLL_S)
            if kind == "ok":
                results[rank] = pickle.loads(payload)
            else:
                events.append((kind, rank, payload))
        except queue_mod.Empty:
            pass
        now = time.time()
        for r, p in enumerate(parties):
            if r not in results and p.exitcode is not None and not any(e[1] == r for e in events):
                if p.exitcode != 0 or not _drain_ok(results_q, results, events, r):
                    events.append(("exit", r, f"exited with code {p.exitcode} before finishing"))
        if dealer.exitcode is not None and len(results) < n and not any(e[1] == n for e in events):
            events.append(("dealer_exit", n, f"exited with code {dealer.exitcode} while parties were running"))
        if events and first_failure is None:
            first_failure = now
        if first_failure is not None and now - first_failure >= GRACE_S:
            raise _blame(events, n)
        if first_failure is None and now - max(board.last[r] for r in range(n)) > timeout_s:
            busy = [r for r in range(n) if r not in results and board.in_comm[r] == 0]
            if not busy:
                fewest = min(board.ops[r] for r in range(n))
                busy = [r for r in range(n) if board.ops[r] == fewest]
            who = ", ".join(f"party {r}" for r in busy)
            raise PartyTimeoutError(
                f"{who} made no progress for {timeout_s:g} s (smpc.timeout_s) while the others waited "
                f"for it: it hangs or is far too slow. Check that host/process, or raise smpc.timeout_s",
                party=busy[0],
            )
    return results


def _drain_ok(results_q: Any, results: Dict[int, Any], events: list, rank: int) -> bool:
    """A party that exited 0 may have its result still in flight: wait for it briefly."""
    deadline = time.time() + 2.0
    while time.time() < deadline:
        try:
            kind, r, payload = results_q.get(timeout=POLL_S)
        except queue_mod.Empty:
            continue
        if kind == "ok":
            results[r] = pickle.loads(payload)
        else:
            events.append((kind, r, payload))
        if r == rank:
            return True
    return False


def _blame(events: List[Tuple[str, int, str]], n: int) -> PartyFailedError:
    """Pick the cause: a reported error (it carries the message) beats a bare exit code, and
    both beat a peer error (the peer merely noticed the failure)."""
    for kinds in (("error",), ("exit",), ("dealer_exit",), ("peer_error",)):
        for kind, rank, payload in events:
            if kind in kinds:
                role = "dealer" if rank == n else f"party {rank}"
                if kind == "error":
                    log.error("%s reported:\n%s", role, payload)
                others = sorted({f"party {r}" for k, r, _ in events if r != rank and r != n})
                tail = f" (then {', '.join(others)} stopped too)" if others else ""
                return PartyCrashedError(
                    f"{role} failed: {payload.strip().splitlines()[0] if payload.strip() else kind}{tail}. "
                    f"See that process's log; the run was stopped and every MPC process terminated.",
                    party=rank,
                    role="dealer" if rank == n else "party",
                )
    return PartyCrashedError("an MPC process failed", party=None)


def _join_all(procs: List[Any], timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    for p in procs:
        p.join(max(0.0, deadline - time.time()))


def _stop_all(procs: List[Any]) -> None:
    procs = [p for p in procs if p.pid is not None]  # started ones
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(2.0)
        if p.is_alive():
            p.kill()
            p.join(2.0)
