"""The privacy checks: each looks at one role's recorded view of real hybrid DP steps and returns
the violations it finds (an empty list means the check passes).

A record (see ``test_hybrid_privacy``) holds, for batches "A" and "B" of party 0 (everything
else fixed): each party's results from :class:`hybrid_harness.RecordingHybridSteps`, K's raw
decrypted doubles and E's masks per round (:class:`hybrid_harness.ServiceViews`), the wire
logs of K and E, and the run's hiding bits H.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import numpy as np
from scipy.stats import kstest

from privacy_helpers import as_int64, blockwise_min_p, sum_mod

ALPHA = 1e-4  # per-test false alarm


def rebuild(record: Dict[str, Any], label: str) -> List[tuple]:
    """Per round: (kind, v + R, -R, v) in fixed point (int64), rebuilt from every party's shares."""
    r0, r1 = record["results"][0][label], record["results"][1][label]
    out = []
    for (rid, kind, k0), (rid1, _, k1), (_, _, e0), (_, _, e1) in zip(r0["k_shares"], r1["k_shares"],
                                                                      r0["e_shares"], r1["e_shares"]):
        if rid != rid1:
            raise AssertionError(f"parties fetched different rounds ({rid} vs {rid1})")
        k_plain, neg_r = sum_mod([k0, k1]), sum_mod([e0, e1])
        out.append((kind, k_plain, neg_r, sum_mod([k_plain, neg_r])))
    return out


def transcript(record: Dict[str, Any], label: str) -> np.ndarray:
    """The observer's (party 1's) view: its MPC openings and the shares it got from K and E."""
    view = record["results"][1][label]
    parts = [as_int64(view["opened"])]
    parts += [as_int64(s) for _, _, s in view["k_shares"]] + [as_int64(s) for _, _, s in view["e_shares"]]
    return np.concatenate(parts)


# ------------------------------------------------------------------ the checks


def masks_fresh(record: Dict[str, Any]) -> List[str]:
    """E draws a fresh mask for every slot of every round: no mask value repeats anywhere."""
    masks = np.concatenate([m.reshape(-1) for m in record["views"].e_masks])
    repeats = masks.size - np.unique(masks).size
    return [f"{repeats} mask values repeat across rounds"] if repeats else []


def masks_finer_than_the_grid(record: Dict[str, Any]) -> List[str]:
    """A mask hides the value itself, not just its 2^-16 cell: where doubles resolve far below
    2^-16 (|R| < 2^28: 2^-24), R's position inside its 2^-16 cell is spread, not on the grid."""
    masks = np.concatenate([m.reshape(-1) for m in record["views"].e_masks])
    small = masks[np.abs(masks) < 2.0 ** 28]
    if small.size < 100:
        return [f"only {small.size} masks below 2^28 to check (need 100)"]
    on_grid = float(np.mean(np.mod(small * 2 ** 16, 1.0) == 0.0))
    return [f"{on_grid:.0%} of the masks are multiples of 2^-16"] if on_grid > 0.02 else []


def values_within_announced_bounds(record: Dict[str, Any]) -> List[str]:
    """Every value K decrypted (masked) lies below the bound 2^V its mask width was chosen for."""
    out = []
    for label in ("A", "B"):
        bits = record["results"][0][label]["value_bits"]
        for kind, _, _, v in rebuild(record, label):
            top = float(np.abs(v.astype(np.float64)).max()) / 2 ** 16
            if top >= 2.0 ** bits[kind]:
                out.append(f"batch {label}, {kind}: |v| up to {top:.3g} >= 2^{bits[kind]} (the announced bound)")
    return out


def k_sees_only_masked_values(record: Dict[str, Any]) -> List[str]:
    """K's raw plaintexts of each round are spread uniformly over its mask range [-2^B, 2^B)."""
    out = []
    plain = record["views"].k_plain
    bits = record["results"][0]["A"]["value_bits"]
    kinds = [k for _, k, _ in record["results"][0]["A"]["k_shares"]] * 2
    for kind, y in zip(kinds, plain):
        width = 2.0 ** (bits[kind] + record["hiding_bits"])
        y = y.reshape(-1) / width
        if y.size >= 50 and kstest(y, "uniform", args=(-1, 2)).pvalue < ALPHA:
            out.append(f"K's plaintexts of {kind} are not uniform on the mask range")
    return out


def noise_fresh_and_private(record: Dict[str, Any]) -> List[str]:
    """Each party's noise is its own: independent of the other party's, and of the stated size."""
    out = []
    for label in ("A", "B"):
        n0, n1 = (record["results"][j][label]["noise"] for j in (0, 1))
        if n0.size < 100:
            return [f"batch {label}: only {n0.size} noise values recorded"]
        corr = float(np.corrcoef(n0, n1)[0, 1])
        if abs(corr) > 0.2:
            out.append(f"batch {label}: the parties' noise draws are correlated ({corr:.3f})")
        for j, n in enumerate((n0, n1)):
            if abs(float(n.std()) / record["noise_std"] - 1.0) > 0.15:
                out.append(f"party {j}'s noise has std {n.std():.3g}, not {record['noise_std']:.3g}")
    a, b = (record["results"][0][x]["noise"] for x in ("A", "B"))
    if np.array_equal(a, b):
        out.append("party 0 drew the same noise in two steps")
    return out


def transcript_independent_of_the_batch(record: Dict[str, Any]) -> List[str]:
    """Party 1's view does not depend on party 0's batch: (1) the small-opening distinguisher:
    no opened value or share is a small fixed-point number (2 <= |X| < 2^40: probability 2^-23
    for a uniform ring element, certain for an unmasked value); (2) per-byte chi-square per
    position-aligned block, Bonferroni-corrected."""
    a, b = transcript(record, "A"), transcript(record, "B")
    out = []
    if a.size != b.size:
        return [f"the views differ in length ({a.size} vs {b.size}): the message schedule depends on the data"]
    for name, t in (("A", a), ("B", b)):
        small = int(np.sum((np.abs(t) >= 2) & (np.abs(t) < 2 ** 40)))
        if small > 2:
            out.append(f"batch {name}: {small} opened values are small fixed-point numbers (unmasked values)")
    p = blockwise_min_p(a, b)
    if p < ALPHA:
        out.append(f"party 1's view differs between batches (p = {p:.2g})")
    return out


CHECKS: Dict[str, Callable[[Dict[str, Any]], List[str]]] = {
    "masks_fresh": masks_fresh,
    "masks_finer_than_the_grid": masks_finer_than_the_grid,
    "values_within_announced_bounds": values_within_announced_bounds,
    "k_sees_only_masked_values": k_sees_only_masked_values,
    "noise_fresh_and_private": noise_fresh_and_private,
    "transcript_independent_of_the_batch": transcript_independent_of_the_batch,
}
