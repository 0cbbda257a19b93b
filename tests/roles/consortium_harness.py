"""Run a consortium the way operators do: every role a separate ``python -m ppml_hybrid ROLE``
command with its own key (made by ``keygen``), its own data folder and the shared consortium
file; optionally each in its own network namespace. Every process records the files it opens
(``sys.addaudithook`` via a ``sitecustomize`` on its PYTHONPATH) so tests can check who read what.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import yaml

from ppml_hybrid.config import RunConfig
from ppml_hybrid.data import DataSplits, ImageSet
from ppml_hybrid.data.sites import write_site_sets
from ppml_hybrid.roles.runconfig import write_run_config

REPO = Path(__file__).resolve().parents[2]
AUDIT_SITE = '''
import os, sys
_path = os.environ.get("PPML_AUDIT_LOG")
if _path:
    _out = open(_path, "a", buffering=1)
    _busy = [False]

    def _hook(event, args):
        if event != "open" or _busy[0] or not args:
            return
        target = args[0]
        if isinstance(target, (str, bytes, os.PathLike)):
            _busy[0] = True
            try:
                _out.write(os.fsdecode(target) + "\\n")
            finally:
                _busy[0] = False

    sys.addaudithook(_hook)
'''


def random_set(n: int, seed: int, image: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    return ImageSet(images=torch.randn(n, 1, image, image, generator=g), labels=torch.randint(0, 2, (n,), generator=g),
                    patient_ids=tuple(f"p{seed}-{i}" for i in range(n)), sites=(None,) * n,
                    sources=tuple(f"s{i}" for i in range(n)))


@dataclasses.dataclass
class Role:
    name: str
    host: str
    namespace: Optional[str] = None


class Consortium:
    """Keys, consortium file, run config and site folders under ``root``; :meth:`start` runs a role."""

    def __init__(self, root: Path, cfg: RunConfig, roles: Sequence[Role], splits: DataSplits) -> None:
        self.root, self.cfg, self.roles = root, cfg, {r.name: r for r in roles}
        self.procs: Dict[str, subprocess.Popen] = {}
        (root / "site").mkdir(parents=True)
        (root / "site" / "sitecustomize.py").write_text(AUDIT_SITE)
        self.sites = write_site_sets(splits, parties=cfg.smpc.parties, out_dir=root / "data")
        self.keys = root / "keys"
        for r in roles:  # each role's key by its own keygen process
            self._run(["keygen", "--role", r.name, "--out", str(self.keys / r.name)], name=f"keygen-{r.name}",
                      wait=True)
        ports = {"coordinator": 29400, "keyservice": 29410, "evaluator": 29420, "dealer": 29430}
        entries = {r.name: {"host": r.host, "port": ports.get(r.name, 29440 + int(r.name.split("-")[-1])
                                                             if r.name.startswith("party-") else 0),
                            "cert": str(self.keys / r.name / f"{r.name}.crt")} for r in roles}
        if not any(r.namespace for r in roles):  # all on loopback: free ports
            from ppml_hybrid.roles.local import _free_ports

            for (name, entry), port in zip(entries.items(), _free_ports(len(entries))):
                entry["port"] = port
        self.consortium_file = root / "consortium.yaml"
        self.consortium_file.write_text(yaml.safe_dump({"roles": entries}))
        self.run_file = root / "run.yaml"
        write_run_config(cfg, self.run_file)
        self.out = root / "out"

    def _env(self, name: str) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.root / "site"), str(REPO)])
        env["PPML_AUDIT_LOG"] = str(self.root / f"audit-{name}.log")
        env["OMP_NUM_THREADS"] = "1"
        return env

    def _run(self, argv: List[str], *, name: str, wait: bool = False) -> subprocess.Popen:
        ns = self.roles.get(name.replace("keygen-", "")) if not wait else None
        prefix = ["ip", "netns", "exec", ns.namespace] if ns is not None and ns.namespace else []
        log = open(self.root / f"{name}.log", "wb")
        p = subprocess.Popen([*prefix, sys.executable, "-m", "ppml_hybrid", *argv], stdout=log,
                             stderr=subprocess.STDOUT, env=self._env(name), cwd=str(self.root))
        if wait:
            if p.wait(timeout=120) != 0:
                raise RuntimeError(f"{name} failed: {self.log(name)}")
        return p

    def start(self, name: str, *extra: str) -> None:
        """Start role ``name`` with its identity, the consortium and run config, and ``extra`` args."""
        role = name if not name.startswith("party-") else "party"
        argv = [role, "--consortium", str(self.consortium_file), "--identity", str(self.keys / name / name),
                "--run-config", str(self.run_file)]
        if role == "party":
            argv += ["--role", name, "--ledger", str(self.root / f"ledger-{name}.jsonl")]
        if role == "coordinator":
            argv += ["--output-dir", str(self.out)]
        if name in ("party-0", "party-1", "party-2") and not any(e.startswith("data.root=") for e in extra):
            extra = (*extra, f"data.root={self.sites[int(name.split('-')[1])]}")
        if self.roles[name].namespace:
            argv += ["--bind", "0.0.0.0"]
        self.procs[name] = self._run([*argv[:1], *argv[1:], *extra], name=name)

    def wait(self, name: str, timeout_s: float) -> int:
        return self.procs[name].wait(timeout=timeout_s)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def opened(self, name: str) -> List[str]:
        path = self.root / f"audit-{name}.log"
        return path.read_text().splitlines() if path.exists() else []

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def plaintext_twin(cfg: RunConfig, sites: Sequence[Path], steps: int):
    """Full-batch SGD (dp=off) on every site's training rows as the parties read them."""
    from ppml_hybrid.data import load_site_splits
    from ppml_hybrid.model import build_model
    from ppml_hybrid.training.optim import make_optimizer, make_schedule
    from ppml_hybrid.training.plan import split_clip

    parts = [load_site_splits(dataclasses.replace(cfg.data, root=str(f))).train for f in sites]
    images = torch.cat([p.images for p in parts])
    labels = torch.cat([p.labels for p in parts])
    model = build_model(cfg.model, image_size=cfg.data.image_size, seed=cfg.seed, split_clip=split_clip(cfg))
    opt = make_optimizer(cfg, model, train_rows=len(labels))
    sched = make_schedule(cfg, opt, steps)
    for _ in range(steps):
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(images), labels, reduction="sum") / len(labels)
        loss.backward()
        opt.step()
        sched.step()
    return model
