"""The orchestrator: start every party and the dealer on this machine, watch them, tear down.

Steps of :func:`run_parties`:

1. pick each role's link port (``smpc.master_port + rank``; 0 = free loopback ports);
2. start the dealer (rank ``parties``) and the parties (ranks 0..parties-1) as separate OS
   processes (``forkserver``: no state inherited from the caller); party r gets only
   ``party_inputs[r]`` (its own hospital's rows). Each process makes its own TLS key pair and
   publishes only its certificate; the orchestrator sends every process the roster (ports and
   pinned certificates), and the processes open their authenticated links (:mod:`.links`);
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

import dataclasses
import hashlib
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
from ppml_hybrid.consortium import party_role
from ppml_hybrid.smpc_stage.errors import PartyCrashedError, PartyFailedError, PartyTimeoutError, RendezvousError
from ppml_hybrid.smpc_stage.links import Member, Roster
from ppml_hybrid.smpc_stage.party import STAGE_STARTING, ProgressBoard, dealer_main, party_session_main
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
    hazmat_crypten_ttp: bool = False,
) -> PartyRun:
    """Run ``program(context, party_inputs[rank])`` in one process per party (steps: module doc).

    ``program`` must be picklable (a module-level function or a frozen dataclass with
    ``__call__``). ``pids_out``, if given, is filled with the child pids as they start (so a
    caller can check after a failure that none is left). Raises
    :class:`~ppml_hybrid.smpc_stage.errors.PartyFailedError` subclasses naming the party.
    ``wall_s`` includes starting the processes; a :class:`PartySession` runs many programs in
    the same processes. ``hazmat_crypten_ttp`` (tests only) runs CrypTen's own insecure TTP
    randomness instead of :mod:`~ppml_hybrid.smpc_stage.dealer` (see
    :mod:`~ppml_hybrid.smpc_stage.world`).
    """
    start = time.time()
    with PartySession(smpc=smpc, party_inputs=party_inputs, shaping=shaping, pids_out=pids_out,
                      hazmat_crypten_ttp=hazmat_crypten_ttp) as session:
        run = session.run(program)
    return PartyRun(results=run.results, wall_s=time.time() - start, pids=run.pids)


class PartySession:
    """Parties and dealer that stay up for many programs (one training run: one session).

    ``with PartySession(smpc=..., party_inputs=...) as s: s.run(program_1); s.run(program_2)``.
    Steps 1-2 of the module doc happen once, on ``__enter__``: each party receives its own
    inputs once and keeps them, CrypTen's world (and the dealer) persists, and each party's
    ``context.session`` cache survives between programs. Each :meth:`run` sends the program to
    every party and watches as in step 3; any failure stops every process (step 4) and the
    session cannot be used again. ``close`` (or leaving the ``with``) lets the parties shut
    CrypTen down cleanly, then reaps every child.
    """

    def __init__(self, *, smpc: SMPCConfig, party_inputs: Sequence[Any], shaping: Optional[LinkShaping] = None,
                 pids_out: Optional[List[int]] = None, hazmat_crypten_ttp: bool = False,
                 run_digest: str = "") -> None:
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
        self._smpc, self._inputs, self._shaping, self._pids_out = smpc, party_inputs, shaping, pids_out
        self._hazmat_crypten_ttp = hazmat_crypten_ttp
        self._run_digest = run_digest or hashlib.sha256(repr(smpc).encode()).hexdigest()
        self._setup: List[Any] = []
        self._procs: List[Any] = []
        # every MPC role's address and self-made certificate (public), once the session started
        self.roster: Optional[Roster] = None
        self._seq = 0
        self._broken = False

    def __enter__(self) -> "PartySession":
        smpc, n = self._smpc, self._smpc.parties
        port = smpc.master_port or free_port(smpc.master_addr)
        ctx = _process_context()
        self._board = ProgressBoard(
            last=ctx.Array("d", [time.time()] * n, lock=False),
            in_comm=ctx.Array("i", [0] * n, lock=False),
            ops=ctx.Array("q", [0] * n, lock=False),
            stage=ctx.Array("i", [STAGE_STARTING] * n, lock=False),
        )
        self._results = ctx.Queue()
        self._commands = [ctx.Queue() for _ in range(n)]
        self._setup = [ctx.Queue() for _ in range(n + 1)]
        parent = os.getpid()

        def rendezvous(rank: int) -> Any:
            rz = rendezvous_for(smpc, rank=rank, port=port)
            return dataclasses.replace(rz, hazmat_crypten_ttp=True) if self._hazmat_crypten_ttp else rz

        self._dealer = ctx.Process(target=dealer_main, args=(rendezvous(n), parent, self._results, self._setup[n]),
                                   name="mpc-dealer", daemon=True)
        self._parties = [
            ctx.Process(
                target=party_session_main,
                args=(rendezvous(r), pickle.dumps(self._inputs[r]), self._shaping,
                      self._board, self._results, self._commands[r], parent, self._setup[r]),
                name=f"mpc-party-{r}",
                daemon=True,
            )
            for r in range(n)
        ]
        try:
            for p in self._parties + [self._dealer]:
                p.start()
                self._procs.append(p)
                if self._pids_out is not None:
                    self._pids_out.append(p.pid)
            if not self._hazmat_crypten_ttp:
                roster = _exchange_certificates(self._parties + [self._dealer], self._results, smpc,
                                                ports=link_ports(smpc), run_digest=self._run_digest)
                for q in self._setup:
                    q.put(roster)
                self.roster = roster
        except BaseException:
            self._teardown()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def party_certificates(self) -> Tuple[bytes, ...]:
        """Each party's own certificate (rank order): what K and E pin for the parties."""
        if self.roster is None:
            raise RendezvousError("no roster: the session has not started, or runs the hazmat transport")
        return tuple(m.cert_pem for m in self.roster.members[: self._smpc.parties])

    @property
    def pids(self) -> Tuple[int, ...]:
        """Parties then dealer (for no-orphan checks)."""
        return tuple(p.pid for p in self._procs)

    def run(self, program: Callable[[Any, Any], Any]) -> PartyRun:
        """Run ``program(context, own inputs)`` at every party; ``results[r]`` is party r's output."""
        if self._broken:
            raise RendezvousError("this MPC session already failed; start a new one")
        self._seq += 1
        payload = pickle.dumps(program)
        start = time.time()
        for r, q in enumerate(self._commands):
            self._board.last[r] = start
            q.put((self._seq, payload))
        try:
            results = _watch(self._parties, self._dealer, self._results, self._board, self._smpc.timeout_s,
                             program=type(program).__name__)
        except BaseException:
            self._broken = True
            self._teardown()
            raise
        n = self._smpc.parties
        for r in range(n):
            seq, _ = results[r]
            if seq != self._seq:
                self._broken = True
                self._teardown()
                raise RendezvousError(f"party {r} answered command {seq} to command {self._seq}: out of sync")
        return PartyRun(results=tuple(results[r][1] for r in range(n)), wall_s=time.time() - start, pids=self.pids)

    def close(self) -> None:
        """Tell every party to stop, wait for a clean CrypTen shutdown, reap every child."""
        if not self._procs:
            return
        if not self._broken:
            for q in self._commands:
                q.put(None)
            _join_all(self._procs, JOIN_S)
        self._teardown()

    def _teardown(self) -> None:
        _stop_all(self._procs)
        self._procs = []
        for q in [self._results, *self._commands, *self._setup]:
            q.close()
            q.cancel_join_thread()


def link_ports(smpc: SMPCConfig) -> List[int]:
    """Each MPC role's fixed link port: ``master_port + rank`` (parties, then the dealer), or
    free loopback ports when ``master_port`` is 0 (one machine)."""
    n = smpc.parties + 1
    if smpc.master_port:
        if smpc.master_port + n - 1 > 65535:
            raise RendezvousError(f"smpc.master_port={smpc.master_port} leaves no room for {n} link ports")
        return [smpc.master_port + r for r in range(n)]
    ports: List[int] = []
    while len(ports) < n:
        p = free_port(smpc.master_addr)
        if p not in ports:
            ports.append(p)
    return ports


def _exchange_certificates(procs: List[Any], results_q: Any, smpc: SMPCConfig, *, ports: List[int],
                           run_digest: str) -> Roster:
    """Collect every child's self-made certificate (public) and build the roster they all pin.

    Each child made its own key pair; the orchestrator only ever sees certificates.
    """
    n = len(procs)
    certs: Dict[int, bytes] = {}
    deadline = time.time() + smpc.timeout_s
    while len(certs) < n:
        try:
            kind, rank, payload = results_q.get(timeout=POLL_S)
        except queue_mod.Empty:
            for r, p in enumerate(procs):
                if r not in certs and p.exitcode is not None:
                    role = "dealer" if r == n - 1 else f"party {r}"
                    raise PartyCrashedError(f"{role} exited (code {p.exitcode}) before publishing its certificate",
                                            party=r, role="dealer" if r == n - 1 else "party")
            if time.time() > deadline:
                missing = ", ".join(str(r) for r in range(n) if r not in certs)
                raise RendezvousError(f"MPC ranks {missing} published no certificate within {smpc.timeout_s:g} s")
            continue
        if kind != "cert":
            raise _blame([(kind, rank, payload)], n - 1)
        certs[rank] = payload
    members = tuple(
        Member(rank=r, name="dealer" if r == n - 1 else party_role(r), host=smpc.master_addr, port=ports[r],
               cert_pem=certs[r])
        for r in range(n)
    )
    return Roster(members=members, run_digest=run_digest)


def _process_context() -> Any:
    """``forkserver``: children fork from a clean server that imported torch and CrypTen once.

    Nothing of the caller's state (threads, open sockets, CrypTen's config) is inherited, as
    with ``spawn``, but the ~4 s import is paid once per orchestrator process instead of once
    per child per run. (The preload list is the standard library's per-process setting.)
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _watch(parties: List[Any], dealer: Any, results_q: Any, board: ProgressBoard, timeout_s: float, *,
           program: str = "") -> Dict[int, Any]:
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
            who = ", ".join(f"party {r} ({board.describe(r)})" for r in busy)
            raise PartyTimeoutError(
                f"{who} made no progress for {timeout_s:g} s (smpc.timeout_s) while the others waited "
                f"for it{' in ' + program if program else ''}: it hangs or is far too slow. Check that "
                "host/process, or raise smpc.timeout_s",
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
