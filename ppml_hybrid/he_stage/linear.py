"""Plaintext-matrix times packed-ciphertext products (the only expensive HE operation here).

With ``G`` features per ciphertext (see :mod:`layout`), ``y = M u`` splits into generalised
diagonals: output ciphertext ``j`` is ``sum_{k,r} d_{j,k,r} * rot(u_k, r*B)`` where
``d_{j,k,r}[g] = M[j*G + g, k*G + (g + r) % G]``. Baby-step/giant-step (``r = n1*a + b``) turns
``K_in * (G - 1)`` rotations into about ``K_in * (n1 - 1) + K_out * (n2 - 1)``, baby steps hoisted
(one decomposition per input ciphertext). ``n1`` is chosen per product to minimise rotations,
from the matrix's sparsity pattern, so that the rotation keys depend on the model's shapes
only, never on the weights' values. With ``G = 1`` every diagonal is a scalar and the product
is one ``EvalLinearWSum`` per output ciphertext: no rotation, no plaintext encoding.

The weights change every step, so every diagonal is encoded anew (at the level of the
ciphertext it multiplies): about half of a product's time. OpenFHE's encoder releases the GIL,
so with an ``encoder`` executor the encodings run on its threads a window ahead of the thread
that rotates and multiplies (same operations in the same order: bit-identical results).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp

from ppml_hybrid.he_stage.layout import SlotLayout


@dataclass(frozen=True)
class TermDiagonals:
    """One term's nonzero diagonals for a fixed baby-step size: key (j, k, b, a) -> d (rolled)."""

    n_in: int
    keys: np.ndarray  # (n, 4) int: j, k, b, a
    diags: np.ndarray  # (n, G) float64, already rolled by n1*a for the giant step


@dataclass(frozen=True)
class LinearPlan:
    """How one (possibly multi-term) product runs under a layout."""

    layout: SlotLayout
    n_out: int
    baby: int  # n1
    terms: Tuple[TermDiagonals, ...]
    bias: Optional[np.ndarray]  # (n_out,) or None

    @property
    def num_out_cts(self) -> int:
        return self.layout.num_ciphertexts(self.n_out)

    def rotation_indices(self) -> Tuple[int, ...]:
        block = self.layout.block
        idx = set()
        for t in self.terms:
            idx.update(int(b) * block for b in np.unique(t.keys[:, 2]) if b)
            idx.update(int(a) * self.baby * block for a in np.unique(t.keys[:, 3]) if a)
        return tuple(sorted(idx))


def _raw_keys(m: sp.spmatrix, groups: int):
    c = sp.coo_matrix(m)
    o, f = c.row.astype(np.int64), c.col.astype(np.int64)
    j, go, k, gf = o // groups, o % groups, f // groups, f % groups
    r = (gf - go) % groups
    return j, go, k, r, c.data.astype(np.float64)


def rotation_cost(*, matrices: Sequence[sp.spmatrix], n_out: int, layout: SlotLayout, baby: int) -> int:
    """Rotations one product needs with baby-step size ``baby`` (hoisted baby steps count 1 each)."""
    g = layout.groups
    total = 0
    giants = []
    for m in matrices:
        j, _, k, r, _ = _raw_keys(m, g)
        b, a = r % baby, r // baby
        total += len(np.unique(k[b > 0] * g + b[b > 0]))
        giants.append(j[a > 0] * g + a[a > 0])
    return total + (len(np.unique(np.concatenate(giants))) if giants else 0)


def choose_baby(*, matrices: Sequence[sp.spmatrix], n_out: int, layout: SlotLayout) -> int:
    """Baby-step size (power of two dividing G) with the fewest rotations."""
    g = layout.groups
    if g == 1:
        return 1
    options = [1 << e for e in range(g.bit_length())]
    costs = [(rotation_cost(matrices=matrices, n_out=n_out, layout=layout, baby=n1), -n1, n1) for n1 in options]
    return min(costs)[2]


def build_plan(
    *, matrices: Sequence[sp.spmatrix], bias: Optional[np.ndarray], n_out: int, layout: SlotLayout, baby: int
) -> LinearPlan:
    """Group the matrices' entries into rolled diagonals for ``layout`` and ``baby``."""
    g = layout.groups
    terms = []
    for m in matrices:
        j, go, k, r, v = _raw_keys(m, g)
        b, a = r % baby, r // baby
        keys = np.stack([j, k, b, a], axis=1)
        if len(keys):
            uniq, inv = np.unique(keys, axis=0, return_inverse=True)
            inv = inv.reshape(-1)
        else:
            uniq, inv = np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.int64)
        d = np.zeros((len(uniq), g))
        np.add.at(d, (inv, (go + baby * a) % g), v)
        terms.append(TermDiagonals(n_in=m.shape[1], keys=uniq, diags=d))
    return LinearPlan(layout=layout, n_out=n_out, baby=baby, terms=tuple(terms),
                      bias=None if bias is None else np.asarray(bias, dtype=np.float64))


def _slot_vector(layout: SlotLayout, per_group: np.ndarray) -> np.ndarray:
    reps = layout.slots // (layout.groups * layout.block)
    return np.tile(np.repeat(per_group, layout.block), reps)


def rescaled(cc, ct):
    """``ct`` with its pending rescale done (noise-scale degree 1), at no level cost.

    FLEXIBLEAUTO leaves a product un-rescaled and rescales a *copy* inside every later
    multiplication; a linear map multiplies each input many times (EvalLinearWSum once per
    output), which measured 5x slower. ``Compress`` to one tower fewer is the rescale
    (``Rescale``/``ModReduce`` are no-ops under FLEXIBLEAUTO).
    """
    if ct.GetNoiseScaleDeg() < 2:
        return ct
    towers = cc.GetMultiplicativeDepth() + 1 - ct.GetLevel()
    return cc.Compress(ct, towers - 1, 1)


#: encodings the ``encoder`` threads run ahead of the multiplying thread (bounds the memory held
#: in encoded plaintexts: about 0.7 MB each at ring 2^14 and 6 towers)
ENCODE_AHEAD = 32


def _in_order(encoder: Optional[Executor], jobs: Sequence[Tuple[int, int, int]],
              encode: Callable[[int, int, int], object]) -> Iterator[object]:
    """``encode(*job)`` for every job, yielded in order; with ``encoder``, up to
    :data:`ENCODE_AHEAD` of them computed ahead on its threads."""
    if encoder is None:
        for job in jobs:
            yield encode(*job)
        return
    todo = iter(jobs)
    pending = deque(encoder.submit(encode, *job) for job in islice(todo, ENCODE_AHEAD))
    try:
        while pending:
            done = pending.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(encoder.submit(encode, *nxt))
            yield done.result()
    finally:
        for f in pending:  # an error (or an abandoned product): drop what was queued
            f.cancel()


def apply_plan(*, cc, plan: LinearPlan, inputs: Sequence[Sequence[object]],
               encoder: Optional[Executor] = None) -> List[object]:
    """Run ``plan`` on one ciphertext list per term; returns the output ciphertexts.
    ``encoder``: threads that encode the weight diagonals ahead (module doc); None: inline."""
    layout = plan.layout
    inputs = [[rescaled(cc, ct) for ct in cts] for cts in inputs]
    if layout.groups == 1:
        return _apply_wsum(cc, plan, inputs)
    block, n1 = layout.block, plan.baby
    order = 2 * cc.GetRingDimension()
    groups = []  # (term, input ciphertext index, its rows), in the order they are multiplied
    for t, term in enumerate(plan.terms):
        if len(term.keys):
            groups += [(t, int(k), np.nonzero(term.keys[:, 1] == k)[0]) for k in np.unique(term.keys[:, 1])]
    jobs = [(t, int(i), inputs[t][k].GetLevel()) for t, k, rows in groups for i in rows]

    def encode(t: int, i: int, level: int) -> object:
        return cc.MakeCKKSPackedPlaintext(_slot_vector(layout, plan.terms[t].diags[i]), 1, level)

    plaintexts = _in_order(encoder, jobs, encode)
    acc: Dict[Tuple[int, int], object] = {}
    for t, k, rows in groups:
        term, ct = plan.terms[t], inputs[t][k]
        babies = sorted({int(b) for b in term.keys[rows, 2]})
        rotated = {0: ct}
        if any(babies):
            pre = cc.EvalFastRotationPrecompute(ct)
            for b in babies:
                if b:
                    rotated[b] = cc.EvalFastRotation(ct, b * block, order, pre)
        for i in rows:
            j, _, b, a = (int(x) for x in term.keys[i])
            prod = cc.EvalMult(rotated[b], next(plaintexts))
            key = (j, a)
            if key in acc:
                cc.EvalAddInPlace(acc[key], prod)
            else:
                acc[key] = prod
    out = []
    for j in range(plan.num_out_cts):
        parts = [acc[(jj, a)] if a == 0 else cc.EvalRotate(acc[(jj, a)], a * n1 * block)
                 for (jj, a) in sorted(acc) if jj == j]
        y = _sum(cc, parts, inputs)
        if plan.bias is not None:
            per_group = np.zeros(layout.groups)
            chunk = plan.bias[j * layout.groups:(j + 1) * layout.groups]
            per_group[: len(chunk)] = chunk
            y = cc.EvalAdd(y, cc.MakeCKKSPackedPlaintext(_slot_vector(layout, per_group), 1, y.GetLevel()))
        out.append(y)
    return out


def _apply_wsum(cc, plan: LinearPlan, inputs) -> List[object]:
    per_out: Dict[int, list] = {}
    for term, cts in zip(plan.terms, inputs):
        keys, w = term.keys, term.diags[:, 0]
        order = np.argsort(keys[:, 0], kind="stable")
        keys, w = keys[order], w[order]
        bounds = np.searchsorted(keys[:, 0], np.arange(plan.num_out_cts + 1))
        for j in range(plan.num_out_cts):
            lo, hi = bounds[j], bounds[j + 1]
            if hi > lo:
                sel = [cts[int(k)] for k in keys[lo:hi, 1]]
                per_out.setdefault(j, []).append(cc.EvalLinearWSum(sel, [float(x) for x in w[lo:hi]]))
    out = []
    for j in range(plan.num_out_cts):
        y = _sum(cc, per_out.get(j, []), inputs)
        if plan.bias is not None and plan.bias[j] != 0.0:
            y = cc.EvalAdd(y, float(plan.bias[j]))
        out.append(y)
    return out


def _sum(cc, parts, inputs):
    if not parts:  # an all-zero row: a zero ciphertext one level down, like a real product
        return cc.EvalMult(inputs[0][0], 0.0)
    if len(parts) == 1:
        return parts[0]
    return cc.EvalAddMany(parts)
