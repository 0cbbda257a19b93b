"""Role ``coordinator``: schedules the run, applies the public update, runs the accountant,
writes the metrics. ``python -m ppml_hybrid coordinator ...``

It holds no scan, no share and no key: it listens on its consortium address for the parties'
control streams (:mod:`ppml_hybrid.rpc.coordination`; only certificates the consortium pins
for ``party-0..``), and speaks :mod:`.messages` with them. Steps:

1. wait for every party's :class:`~.messages.Hello`; refuse a run digest other than its own
   (a site with another model, split or DP setting is refused before step 1);
2. plan the run from the config and the sites' training-row counts, send
   :class:`~.messages.Start`, collect every party's :class:`~.messages.Ready` and refuse the
   run unless every party derived the same plan as the coordinator and (hybrid) verified the
   same key material;
3. train (:func:`ppml_hybrid.training.secure.coordinate`): per step :class:`~.messages.TrainStep`
   to every party, the identical opened noised sums back, the public update;
4. :class:`~.messages.Stop`, then ``metrics.json`` and ``model.pt`` in ``output_dir``.

After every epoch, and when Ctrl-C or SIGTERM stops it, the coordinator writes
``checkpoint.pt`` (:mod:`ppml_hybrid.training.checkpoint`: public weights, optimiser,
schedule, accountant) to ``output_dir``; ``train.resume=DIR`` continues it, and epsilon starts
from the releases the parties' ledgers hold (step 2), so a resumed run reports what an
uninterrupted one would.

Failure: a party whose stream breaks (process killed, host down), or that reports
:class:`~.messages.Failed`, stops the run at once with an error naming the role and its host;
a party that does not answer within ``smpc.timeout_s`` is named as hanging. The remaining
parties are told to stop (their MPC links break too, so they exit on their own).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ppml_hybrid.config import RunConfig, run_digest
from ppml_hybrid.consortium import Consortium, party_role
from ppml_hybrid.identity import LinkIdentity
from ppml_hybrid.roles import messages as m
from ppml_hybrid.roles.common import check_parties, check_pinned
from ppml_hybrid.roles.party import plan_digest
from ppml_hybrid.rpc.codec import WireFormatError, decode, encode
from ppml_hybrid.rpc.coordination import CoordinatorServer
from ppml_hybrid.smpc_stage.errors import PartyCrashedError, PartyTimeoutError, RendezvousError
from ppml_hybrid.training.checks import check_privacy_for_data, check_schedule
from ppml_hybrid.training.checkpoint import check_same_data, load_checkpoint
from ppml_hybrid.training.plan import RunPlan, plan_run
from ppml_hybrid.training.secure import SecureResult, StepRun, coordinate
from ppml_hybrid.training.site_metrics import SiteAggregate

log = logging.getLogger("ppml_hybrid.coordinator")
GRACE_S = 1.0  # after a first failure, wait this long for the reports that say who caused it
PEER_ERRORS = ("PeerCommunicationError", "LinkClosedError")


class RemoteSites:
    """:class:`~ppml_hybrid.training.secure.SiteSession` over the control channel (module doc)."""

    def __init__(self, *, server: CoordinatorServer, consortium: Consortium, timeout_s: float,
                 liveness: Optional[Callable[[], Dict[str, str]]] = None) -> None:
        self._server = server
        self._liveness = liveness
        self._roles = [party_role(j) for j in range(consortium.parties)]
        self._hosts = {r: consortium.role(r).address for r in self._roles}
        self._timeout_s = timeout_s
        self._stopped = False

    # ------------------------------------------------------------------ steps 1-2

    def join(self, *, digest: str, timeout_s: float) -> Tuple[int, ...]:
        """Step 1: every party's Hello; returns the training-row counts in rank order."""
        hellos = self._collect(m.Hello, timeout_s=timeout_s, waiting="to connect and load its data")
        for role, hello in hellos.items():
            if hello.role != role:
                raise RendezvousError(f"{self._where(role)} introduced itself as {hello.role!r}")
            if hello.run_digest != digest:
                raise RendezvousError(
                    f"{self._where(role)} runs another configuration (run digest {hello.run_digest[:12]}... vs "
                    f"{digest[:12]}... here): every site must use the same overrides (model, split, DP, HE, MPC, "
                    "schedule); only data.root, data.labels and output_dir may differ")
        return tuple(hellos[r].train_rows for r in self._roles)

    def start(self, plan: RunPlan, *, timeout_s: float, resume_step: int = 0) -> Tuple[bool, int]:
        """Step 2: Start, then every party's Ready; returns whether K's attestation was a development
        one, and the most releases of this run any party's ledger holds."""
        self._broadcast(m.Start(train_rows=plan.train_rows, resume_step=resume_step))
        readies = self._collect(m.Ready, timeout_s=timeout_s, waiting="to verify the key service")
        want = plan_digest(plan)
        for role, ready in readies.items():
            if ready.plan_digest != want:
                raise RendezvousError(f"{self._where(role)} derived another plan (schedule or noise) than the "
                                      "coordinator: refusing to train")
        keys = {ready.key_material_digest for ready in readies.values()}
        if len(keys) != 1:
            raise RendezvousError("the parties verified different key material at the key service: refusing to train")
        return (any(ready.development_attestation for ready in readies.values()),
                max(ready.ledger_releases for ready in readies.values()))

    # ------------------------------------------------------------------ step 3 (SiteSession)

    def step(self, step: int, state: Dict[str, torch.Tensor]) -> StepRun:
        start = time.time()
        self._broadcast(m.TrainStep(step=step, state=state))
        done = self._collect(m.StepDone, timeout_s=self._timeout_s, waiting=f"in step {step + 1}")
        return StepRun(results=tuple(done[r].output for r in self._roles), wall_s=time.time() - start)

    def evaluate(self, split: str, state: Dict[str, torch.Tensor]) -> List[SiteAggregate]:
        self._broadcast(m.Evaluate(split=split, state=state))
        done = self._collect(m.Evaluated, timeout_s=self._timeout_s, waiting=f"evaluating {split}")
        return [done[r].aggregate for r in self._roles]

    def stop(self, reason: str = "") -> None:
        if self._stopped:
            return
        self._stopped = True
        for role in self._server.connected():
            try:
                self._server.send(role, encode(m.Stop(reason=reason)))
            except Exception:  # a party already gone
                log.debug("could not tell %s to stop", role)

    # ------------------------------------------------------------------ plumbing

    def _where(self, role: str) -> str:
        return f"{role} ({self._hosts.get(role, '?')})"

    def _broadcast(self, msg: Any) -> None:
        payload = encode(msg)
        for role in self._roles:
            self._server.send(role, payload)

    def _collect(self, kind: type, *, timeout_s: float, waiting: str) -> Dict[str, Any]:
        got: Dict[str, Any] = {}
        failures: Dict[str, Tuple[int, str]] = {}  # role -> (blame rank, why)
        deadline = time.monotonic() + timeout_s
        first_failure: Optional[float] = None

        def fail(role: str, rank: int, why: str) -> None:
            nonlocal first_failure
            if role not in failures or rank < failures[role][0]:
                failures[role] = (rank, why)
            first_failure = first_failure or time.monotonic()

        while len(got) < len(self._roles):
            now = time.monotonic()
            if first_failure is not None and now - first_failure >= GRACE_S:
                break
            if now > deadline:
                missing = [r for r in self._roles if r not in got]
                raise PartyTimeoutError(
                    f"{', '.join(self._where(r) for r in missing)} did not answer within {timeout_s:g} s while "
                    f"{waiting}: it hangs, is far too slow, or cannot reach its peers. Check that host, or raise "
                    "smpc.timeout_s", party=self._roles.index(missing[0]))
            for name, why in (self._liveness() if self._liveness is not None else {}).items():
                # nothing in a run kills a role: a process killed by a signal is the cause, one that
                # exited (a peer noticing it) or merely disconnected comes after it
                fail(name, 0 if why.startswith("was killed by signal") else 1, why)
            try:
                role, raw = self._server.recv(timeout_s=min(0.2, max(0.01, deadline - now)))
            except TimeoutError:
                continue
            if raw is None:
                if role not in got:
                    fail(role, 1, "disconnected from the coordinator: its process died or its host became "
                                  "unreachable")
                continue
            try:
                msg = decode(raw, types=m.TO_COORDINATOR)
            except WireFormatError as exc:
                raise RendezvousError(f"{self._where(role)} sent a malformed message: {exc}") from None
            if isinstance(msg, m.Failed):
                # a party's own error beats a vanished process, which beats a peer that merely noticed
                fail(role, 2 if msg.error in PEER_ERRORS else 0, f"failed: {msg.error}: {msg.message}")
            elif isinstance(msg, kind):
                got[role] = msg
            else:
                raise RendezvousError(f"{self._where(role)} sent {m.describe(msg)} while the coordinator waited for "
                                      f"{kind.__name__}")
        if failures:
            raise self._blame(failures)
        return got

    def _blame(self, failures: Dict[str, Tuple[int, str]]) -> PartyCrashedError:
        role = min(failures, key=lambda r: (failures[r][0], r not in self._roles))
        others = sorted(r for r in failures if r != role)
        tail = f" (then {', '.join(others)} stopped too)" if others else ""
        is_party = role in self._roles
        return PartyCrashedError(f"{self._where(role) if is_party else role} {failures[role][1]}{tail}. "
                                 "The run was stopped.", party=self._roles.index(role) if is_party else None,
                                 role="party" if is_party else role)


def run_coordinator(*, cfg: RunConfig, consortium: Consortium, identity: LinkIdentity,
                    bind_host: Optional[str] = None, networks: Sequence[Any] = (),
                    liveness: Optional[Callable[[], Dict[str, str]]] = None,
                    ledger_dir: Optional[str] = None) -> SecureResult:
    """Steps 1-4 of the module doc; returns the result (the caller writes the metrics).
    ``liveness`` (one-machine launcher): returns the role processes that died, by name;
    ``ledger_dir`` (same): where its parties keep their ledgers (recorded in the checkpoint).
    With ``train.resume`` the run continues that folder's checkpoint (same settings, same sites'
    row counts; each party checks its own rows against its ledger)."""
    resume = load_checkpoint(cfg.train.resume, cfg) if cfg.train.resume else None
    check_pinned(identity, consortium, "coordinator")
    me = consortium.role("coordinator")
    check_parties(consortium, cfg.smpc.parties)
    callers = {party_role(j): consortium.role(party_role(j)).cert_pem for j in range(consortium.parties)}
    server = CoordinatorServer(address=f"{bind_host or me.host}:{me.port}", identity=identity, callers=callers)
    sites = RemoteSites(server=server, consortium=consortium, timeout_s=cfg.smpc.timeout_s, liveness=liveness)
    log.info("coordinator listening on %s for %d parties", server.address, consortium.parties)
    reason = "run failed"
    try:
        rows = sites.join(digest=run_digest(cfg), timeout_s=cfg.smpc.timeout_s + cfg.keyservice.startup_timeout_s)
        log.info("sites hold %s training rows (their validation and test rows stay with them)",
                 ", ".join(str(r) for r in rows))
        plan = plan_run(cfg, train_rows=rows)
        if resume is not None:
            check_same_data(resume, {"site_train_rows": list(rows)}, run_dir=cfg.train.resume)
        check_privacy_for_data(cfg, n_train=plan.n_train)
        check_schedule(cfg, total_steps=plan.schedule.total_steps, n_train=plan.n_train)
        development, released = sites.start(plan, timeout_s=cfg.smpc.timeout_s + cfg.keyservice.startup_timeout_s,
                                            resume_step=resume.step if resume is not None else 0)
        if development:
            log.warning("the parties accepted a DEVELOPMENT attestation of the key service (no enclave): "
                        "each party host chose this itself; never for real patients' data")
        result = coordinate(cfg, sites, plan, networks=networks, resume=resume, released_before=released,
                            ledger_dir=ledger_dir)
        reason = "finished"
        return result
    finally:
        sites.stop(reason)
        time.sleep(0.3)  # let Stop reach the parties before the server closes
        server.close()

