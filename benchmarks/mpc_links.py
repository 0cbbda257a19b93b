"""Cost of the authenticated MPC links: TLS 1.3 point-to-point links vs gloo in clear.

What it measures, in one command (two worlds of two processes each, one after the other,
repeated and interleaved so machine noise hits both alike):

* gloo: ``torch.distributed.all_reduce`` on a gloo group (what CrypTen used before: no
  encryption, no authentication, ephemeral ports) -- what a competent torch user writes;
* links: :class:`ppml_hybrid.smpc_stage.link_communicator.LinkCommunicator.all_reduce` over
  the mutually authenticated TLS mesh (:mod:`ppml_hybrid.smpc_stage.links`).

For each message size it prints the median time per all_reduce of both and the ratio
links/gloo. Small messages measure per-round latency (MPC is round-bound), large ones
throughput (AES-GCM and copies).

    python benchmarks/mpc_links.py            # full sizes (8 B .. 8 MiB)
    python benchmarks/mpc_links.py --smoke    # tiny run, every code path (the test suite runs it)
    python benchmarks/mpc_links.py --check    # exit 1 when a ratio misses its target

Targets (``--check``): at most 4x gloo per round for small messages and 3x for 8 MiB.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_SMALL, TARGET_LARGE = 4.0, 3.0


def _time_all_reduce(all_reduce, size_bytes: int, reps: int) -> List[float]:
    x = torch.randint(-2**62, 2**62, (max(1, size_bytes // 8),), dtype=torch.long)
    all_reduce(x)  # warm-up
    out = []
    for _ in range(reps if size_bytes < (1 << 20) else max(3, reps // 5)):
        t = time.perf_counter()
        all_reduce(x)
        out.append(time.perf_counter() - t)
    return out


def _gloo_worker(rank: int, port: int, sizes: List[int], reps: int, q) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=2, rank=rank)

    def all_reduce(x):
        y = x.clone()
        dist.all_reduce(y)
        return y

    res = {s: _time_all_reduce(all_reduce, s, reps) for s in sizes}
    dist.destroy_process_group()
    q.put((rank, res))


def _links_worker(rank: int, roster, identity, sizes: List[int], reps: int, q) -> None:
    from ppml_hybrid.smpc_stage.link_communicator import LinkCommunicator
    from ppml_hybrid.smpc_stage.links import Mesh

    torch.set_num_threads(1)
    mesh = Mesh(me=rank, roster=roster, identity=identity, timeout_s=60).open()
    comm = LinkCommunicator(mesh=mesh, parties=2)
    res = {s: _time_all_reduce(comm.all_reduce, s, reps) for s in sizes}
    comm.close()
    q.put((rank, res))


def _roster():
    from ppml_hybrid.identity import make_link_identity
    from ppml_hybrid.smpc_stage.launcher import free_port
    from ppml_hybrid.smpc_stage.links import Member, Roster

    ids = [make_link_identity(f"bench-{r}") for r in range(3)]
    # a third (idle) member stands for the dealer: the roster always has parties + dealer
    members = tuple(Member(rank=r, name=f"rank-{r}", host="127.0.0.1", port=free_port(), cert_pem=ids[r].cert_pem)
                    for r in range(3))
    return Roster(members=members, run_digest="bench"), ids


def _run(kind: str, sizes: List[int], reps: int) -> Dict[int, List[float]]:
    from ppml_hybrid.smpc_stage.launcher import free_port

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    if kind == "gloo":
        port = free_port()
        procs = [ctx.Process(target=_gloo_worker, args=(r, port, sizes, reps, q)) for r in range(2)]
    else:
        roster, ids = _roster()
        # the idle third member is never dialled: ranks 0 and 1 only need each other
        roster = type(roster)(members=roster.members[:2], run_digest=roster.run_digest)
        procs = [ctx.Process(target=_links_worker, args=(r, roster, ids[r], sizes, reps, q)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(q.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(30)
    return results[0]


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n % (1 << 20) else f"{n >> 10} KiB" if n >= 1024 and not n % 1024 \
        else str(n)


def table_markdown(rows: List[Dict[str, float]]) -> str:
    """The results table from this script's JSON (printed by the script; ``run_all.py`` renders
    the README's table with it)."""
    lines = ["| bytes | gloo ms | links ms | ratio links / gloo | target |", "|---:|---:|---:|---:|---:|"]
    for r in rows:
        miss = " (missed)" if r["ratio"] > r["target"] else ""
        lines.append(f"| {_size(int(r['bytes']))} | {r['gloo_ms']:.3g} | {r['links_ms']:.3g} | {r['ratio']:.2f}x{miss} | "
                     f"<= {r['target']:g}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and repetitions (CI)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of both worlds")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    sizes = [8, 4096] if args.smoke else [8, 1024, 65536, 1 << 20, 8 << 20]
    reps = 5 if args.smoke else 50
    rounds = 1 if args.smoke else args.rounds
    times: Dict[str, Dict[int, List[float]]] = {"gloo": {s: [] for s in sizes}, "links": {s: [] for s in sizes}}
    for _ in range(rounds):
        for kind in ("gloo", "links"):
            for s, ts in _run(kind, sizes, reps).items():
                times[kind][s].extend(ts)
    ok, rows = True, []
    for s in sizes:
        g, l = statistics.median(times["gloo"][s]), statistics.median(times["links"][s])
        ratio = l / g
        target = TARGET_LARGE if s >= (1 << 20) else TARGET_SMALL
        miss = ratio > target
        ok &= not miss
        rows.append({"bytes": s, "gloo_ms": g * 1e3, "links_ms": l * 1e3, "ratio": ratio, "target": target})
    print(table_markdown(rows))
    worst = max(rows, key=lambda r: r["ratio"] / r["target"])
    print(f"ratio check: links / gloo at most {worst['ratio']:.2f}x ({_size(int(worst['bytes']))} messages, target "
          f"<= {worst['target']:g}x): {'met' if ok else 'missed'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.check and not ok:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
