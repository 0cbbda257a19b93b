"""The one-machine consortium: every role as its own local process, the same entry points as
across hosts (what ``train.py mode=hybrid`` runs).

Steps of :func:`train_local`:

1. one folder per site (:mod:`ppml_hybrid.data.sites`): each party process gets only its own;
2. a private work folder (mode 0700, removed afterwards): each role's key pair is made by its
   own ``keygen`` process (the launcher reads only the certificates), free loopback ports, and
   the consortium file pinning every certificate;
3. start ``keyservice`` (hybrid, or DP noise from K; it writes its development root for the clients, whose
   ``--accept-development-attestation`` this launcher sets because it started that K itself),
   ``evaluator``, ``dealer`` and one ``party`` per site, each through the command line's
   ``ppml_hybrid.roles.cli.main`` with its own argv and its log in ``output_dir/logs/ROLE.log``;
4. run the coordinator in this process (:func:`ppml_hybrid.roles.coordinator.run_coordinator`),
   checking meanwhile that no role process died (a dead one is named with its log's last line);
5. stop every process (SIGTERM, then SIGKILL) and remove the work folder, on success and on
   failure: no process is left behind.

The parties and the dealer fork from a clean ``forkserver`` that imported torch, CrypTen and the
data stack once (paid once, not per role; nothing of this process's state is inherited); K and
E start as fresh interpreters (:meth:`LocalRoles.start_fresh`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from ppml_hybrid.config import RunConfig
from ppml_hybrid.consortium import load_consortium, party_role
from ppml_hybrid.errors import PPMLError
from ppml_hybrid.roles.runconfig import write_run_config
from ppml_hybrid.training.plan import is_all_mpc, needs_key_service
from ppml_hybrid.training.secure import SecureResult

log = logging.getLogger(__name__)

PRELOAD = ["torch", "grpc", "ppml_hybrid.smpc_stage.party", "ppml_hybrid.roles.party", "ppml_hybrid.data",
           "ppml_hybrid.roles.cli"]
STOP_S = 5.0


def _free_ports(n: int, host: str = "127.0.0.1") -> List[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _role_process(argv: List[str], log_path: str, parent_pid: int) -> None:
    """Entry point of one role process: its log to a file, one thread per library, then the
    same ``main`` as the command line. Exits when the launcher disappears."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    from ppml_hybrid.smpc_stage.party import watch_parent

    watch_parent(parent_pid)
    import torch

    torch.set_num_threads(1)
    from ppml_hybrid.roles.cli import main

    code = main(argv)
    os._exit(code)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the launcher dies (Linux PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class _Fresh:
    """A ``subprocess.Popen`` with the ``multiprocessing.Process`` calls LocalRoles uses."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self._p = popen
        self.pid = popen.pid

    @property
    def exitcode(self) -> Optional[int]:
        return self._p.poll()

    def is_alive(self) -> bool:
        return self._p.poll() is None

    def terminate(self) -> None:
        self._p.terminate()

    def kill(self) -> None:
        self._p.kill()

    def join(self, timeout: Optional[float] = None) -> None:
        try:
            self._p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass


class LocalRoles:
    """The started role processes (step 3) and their liveness check (step 4)."""

    def __init__(self, log_dir: Path) -> None:
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(PRELOAD)
        self._log_dir = log_dir
        self._procs: Dict[str, Any] = {}

    def boot(self) -> None:
        """Start the fork server now (it preloads in the background; the first start waits for it)."""
        from multiprocessing import forkserver

        forkserver.ensure_running()

    def start(self, name: str, argv: List[str]) -> None:
        """A role that runs torch and CrypTen (party, dealer): a child of the fork server."""
        path = self._log_dir / f"{name}.log"
        p = self._ctx.Process(target=_role_process, args=(argv, str(path), os.getpid()),
                              name=f"ppml-{name}", daemon=True)
        p.start()
        self._procs[name] = p

    def start_fresh(self, name: str, argv: List[str], *, threads: int = 1) -> None:
        """A role that runs OpenFHE (K, E): a fresh interpreter, so that OpenMP reads
        ``OMP_NUM_THREADS`` and passive waiting when it starts (a child of the fork server would
        inherit an OpenMP runtime torch may already have set up; the setting is then not
        guaranteed). Measured: no step-time difference on the default run either way."""
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
        with open(self._log_dir / f"{name}.log", "ab") as out:
            self._procs[name] = _Fresh(subprocess.Popen([sys.executable, "-m", "ppml_hybrid", *argv], stdout=out,
                                                        stderr=subprocess.STDOUT, env=env,
                                                        preexec_fn=_die_with_parent))

    def dead(self) -> Dict[str, str]:
        """Role processes that exited while the run goes on (every role stays up until the end)."""
        out = {}
        for name, p in self._procs.items():
            if p.exitcode is None:
                continue
            how = f"was killed by signal {-p.exitcode}" if p.exitcode < 0 else f"exited with code {p.exitcode}"
            out[name] = f"{how} ({self.last_error(name)}; log: {self._log_dir / (name + '.log')})"
        return out

    def last_error(self, name: str) -> str:
        try:
            lines = (self._log_dir / f"{name}.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        errors = [ln for ln in lines if " ERROR " in ln or ln.startswith("error:")]
        return (errors[-1] if errors else lines[-1] if lines else "empty log").strip()[-300:]

    @property
    def pids(self) -> Tuple[int, ...]:
        return tuple(p.pid for p in self._procs.values() if p.pid is not None)

    def stop(self) -> None:
        procs = list(self._procs.values())
        for p in procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + STOP_S
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(2.0)


def _site_folders(cfg: RunConfig, work: Path, splits: Any) -> List[Tuple[Path, Optional[Path]]]:
    from ppml_hybrid.data.sites import demo_site_folders, site_label_files, write_site_sets

    n = cfg.smpc.parties
    if splits is not None:
        return [(f, None) for f in write_site_sets(splits, parties=n, out_dir=work / "sites")]
    if cfg.data.name == "demo":
        return [(f, None) for f in demo_site_folders(cfg.data, parties=n)]
    return [(root, labels) for root, labels in site_label_files(cfg.data, parties=n, out_dir=work)]


def _keygen(names: Sequence[str], keys: Path, log_dir: Path, timeout_s: float) -> None:
    """Each role's key pair made by its own ``python -m ppml_hybrid keygen`` process (step 2)."""
    procs = {}
    for name in names:
        with open(log_dir / f"keygen-{name}.log", "wb") as out:
            procs[name] = subprocess.Popen([sys.executable, "-m", "ppml_hybrid", "keygen", "--role", name,
                                            "--out", str(keys), "--valid-days", "2"],
                                           stdout=out, stderr=subprocess.STDOUT)
    for name, p in procs.items():
        try:
            code = p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            code = p.wait()
        if code != 0:
            text = (log_dir / f"keygen-{name}.log").read_text(errors="replace").strip()
            raise PPMLError(f"keygen for {name} failed (code {code}): {text[-300:]}")


def write_consortium(path: Path, *, names: Sequence[str], ports: Sequence[int], keys: Path,
                     host: str = "127.0.0.1") -> None:
    roles = {n: {"host": host, "port": p, "cert": str(keys / f"{n}.crt")} for n, p in zip(names, ports)}
    path.write_text(yaml.safe_dump({"name": "one-machine run", "roles": roles}, sort_keys=False))


def _ledger_dir(cfg: RunConfig, work: Path) -> Path:
    """Where this machine's parties keep their ledgers: the output folder of the run's first
    session (a resume appends to the same files, so epsilon continues from them)."""
    if cfg.train.resume:
        from ppml_hybrid.training.checkpoint import CheckpointError, load_checkpoint

        ckpt = load_checkpoint(cfg.train.resume, cfg)
        if cfg.dp.enabled and (ckpt.ledger_dir is None or not Path(ckpt.ledger_dir).is_dir()):
            raise CheckpointError(f"train.resume={cfg.train.resume}: the parties' privacy ledgers of that run "
                                  f"({ckpt.ledger_dir}) are gone; its epsilon cannot continue without them")
        if ckpt.ledger_dir is not None:
            return Path(ckpt.ledger_dir)
    return (Path(cfg.output_dir).resolve() if cfg.output_dir else work) / "ledgers"


def train_local(cfg: RunConfig, *, splits: Any = None, networks: Sequence[Any] = (),
                pids_out: Optional[List[int]] = None) -> SecureResult:
    """Steps 1-5 of the module doc; ``splits`` (tests, benchmarks): in-memory data instead of
    ``cfg.data``. ``pids_out`` receives every started role process id (no-orphan checks)."""
    from ppml_hybrid.identity import load_identity
    from ppml_hybrid.roles.coordinator import run_coordinator

    hybrid = not is_all_mpc(cfg)
    with_k = needs_key_service(cfg)
    work = Path(tempfile.mkdtemp(prefix="ppml-consortium-"))
    os.chmod(work, 0o700)
    log_dir = Path(cfg.output_dir) / "logs" if cfg.output_dir else work / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    roles = LocalRoles(log_dir)
    roles.boot()  # the fork server imports torch, CrypTen and the data stack while keys are made
    try:
        sites = _site_folders(cfg, work, splits)
        parties = [party_role(j) for j in range(cfg.smpc.parties)]
        names = parties + ["dealer", "coordinator"] + (["keyservice"] if with_k else []) + \
            (["evaluator"] if hybrid else [])
        keys = work / "keys"
        _keygen(names, keys, log_dir, timeout_s=cfg.smpc.timeout_s)
        consortium_file = work / "consortium.yaml"
        write_consortium(consortium_file, names=names, ports=_free_ports(len(names)), keys=keys)
        run_file = work / "run.yaml"
        write_run_config(cfg, run_file)
        common = ["--consortium", str(consortium_file), "--run-config", str(run_file)]
        dev_args: List[str] = []
        if with_k:
            dev_root = work / "keyservice-development-root.pem"
            ks_args = ["keyservice", *common, "--identity", str(keys / "keyservice")]
            if cfg.keyservice.attestation == "development":
                # this launcher started this K itself, on this host: it alone accepts K's development documents
                ks_args += ["--development-root-out", str(dev_root)]
                dev_args = ["--accept-development-attestation", str(dev_root)]
            log.info("starting the key service%s ...", f" and the HE evaluator ({cfg.he.name})" if hybrid else
                     " (it draws the DP noise)")
            roles.start_fresh("keyservice", ks_args)
        if hybrid:
            roles.start_fresh("evaluator", ["evaluator", *common, "--identity", str(keys / "evaluator"), *dev_args],
                              threads=cfg.he.evaluator_threads)
        log.info("starting %d party processes (one per site folder) and the dealer; role logs in %s",
                 cfg.smpc.parties, log_dir)
        roles.start("dealer", ["dealer", *common, "--identity", str(keys / "dealer")])
        ledgers = _ledger_dir(cfg, work)
        for j, (root, labels) in enumerate(sites):
            site = [f"data.root={root}"] + ([f"data.labels={labels}"] if labels is not None else [])
            ledger = ledgers / f"{parties[j]}.jsonl"
            roles.start(parties[j], ["party", *common, "--identity", str(keys / parties[j]), "--role", parties[j],
                                     "--ledger", str(ledger), *dev_args, *site])
        if pids_out is not None:
            pids_out.extend(roles.pids)
        return run_coordinator(cfg=cfg, consortium=load_consortium(consortium_file),
                               identity=load_identity(keys / "coordinator"), networks=networks,
                               liveness=roles.dead, ledger_dir=str(ledgers))
    finally:
        roles.stop()
        shutil.rmtree(work, ignore_errors=True)
