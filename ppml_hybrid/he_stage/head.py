"""The HE head: blocks ``split+1..L`` forward and backward on packed ciphertexts.

Every linear piece has public weights. Forward for HE block j (input u, pre-activation x_j,
block output u_j = pool(act(x_j))) and backward (design step 7) with:

* average pooling folded into the next linear map (``Q_j = M_j P_{j-1}``), so pooling costs
  no level on the critical path; the pooled activation the MPC needs is a separate product;
* ``a*x^2 + b*x`` folded into the next map: ``x_j = (a Q_j) x^2 + (b Q_j) x + c_j``, so the
  activation costs the level of ``x^2`` only; the same fold backward gives
  ``delta_x = x * ((2a Q)^T delta) + b * (Q^T delta)`` (one product level, not two);
* ``x^2``: ``x_j = Q_j x^2 + c_j`` and ``delta_x = x * ((2Q)^T delta)``.

What comes back (the MPC computes every weight gradient from these, design steps 5 and 7):
pre-activations ``x_j`` and block outputs ``u_j`` of the hidden HE blocks, the logits, the
deltas ``delta_x_j`` at every hidden pre-activation, ``delta_h_j`` at the output of every
``a*x^2+b*x`` (for the gradients of a and b), and ``delta_a`` at the split.

The head holds no key and no mutable state: weights are bound per training step with
:meth:`HEHead.load_weights`, and forward's result is passed to backward.
"""

from __future__ import annotations

import types
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import scipy.sparse as sp

from ppml_hybrid.config import ModelConfig
from ppml_hybrid.he_stage.backends import CKKSBackend, CKKSTensor, LevelBackend, LevelTensor
from ppml_hybrid.he_stage.errors import LayoutError, WeightsError
from ppml_hybrid.he_stage.layout import SlotLayout
from ppml_hybrid.he_stage.linear import LinearPlan, build_plan, choose_baby
from ppml_hybrid.he_stage.matrices import avgpool_matrix, conv_bias, conv_matrix, dense_matrix
from ppml_hybrid.model.spec import block_shapes, validate_split


@dataclass(frozen=True)
class HEBlockSpec:
    """One HE-side block: shapes per sample and its non-linear parts."""

    index: int  # 1-based, as users count blocks
    type: str
    activation: str  # poly, square, none
    pool_size: int  # 0: no pooling
    kernel_size: int
    stride: int
    padding: int
    in_shape: Tuple[int, ...]
    pre_shape: Tuple[int, ...]  # after conv/dense, before pooling
    out_shape: Tuple[int, ...]

    @property
    def n_in(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def n_pre(self) -> int:
        return int(np.prod(self.pre_shape))

    @property
    def n_out(self) -> int:
        return int(np.prod(self.out_shape))


@dataclass(frozen=True)
class HEForward:
    """Forward result: logits, and per hidden HE block its pre-activation and output."""

    logits: Any
    pre_activations: Mapping[int, Any]
    activations: Mapping[int, Any]


@dataclass(frozen=True)
class HEBackward:
    """Backward result: delta at the split, at each hidden pre-activation, after each poly."""

    delta_input: Any
    delta_pre_activations: Mapping[int, Any]
    delta_post_activations: Mapping[int, Any]


@dataclass(frozen=True)
class HEWeights:
    """Public weights of one step, prepared as linear plans for the head's layout."""

    plans: Mapping[str, LinearPlan]
    poly: Mapping[int, Tuple[float, float]]  # block index -> (a, b)


def _specs(model: ModelConfig, split_layer: int, image_size: Optional[int]) -> Tuple[HEBlockSpec, ...]:
    validate_split(model, split_layer)
    blocks = model.blocks[split_layer:]
    if not blocks:
        raise LayoutError(f"split_layer={split_layer} leaves no block for the HE stage")
    shapes = block_shapes(model, image_size)[split_layer:] if image_size else None
    out = []
    for pos, blk in enumerate(blocks):
        idx = split_layer + 1 + pos
        if shapes is None:
            in_s, pre_s, out_s = (1,), (1,), (1,)
        else:
            sh = shapes[pos]
            in_s, out_s = sh.in_shape, sh.out_shape
            if blk.type == "conv":
                ho = (in_s[1] + 2 * blk.padding - blk.kernel_size) // blk.stride + 1
                wo = (in_s[2] + 2 * blk.padding - blk.kernel_size) // blk.stride + 1
                pre_s = (blk.out, ho, wo)
            else:
                pre_s = out_s
        out.append(HEBlockSpec(
            index=idx, type=blk.type, activation=blk.activation,
            pool_size=blk.pool_size if blk.pool == "avg" else 0,
            kernel_size=blk.kernel_size, stride=blk.stride, padding=blk.padding,
            in_shape=tuple(in_s), pre_shape=tuple(pre_s), out_shape=tuple(out_s),
        ))
    return tuple(out)


# ----------------------------------------------------------------- the program (backend-agnostic)


def run_forward(backend: Any, blocks: Tuple[HEBlockSpec, ...], poly: Mapping[int, Tuple[float, float]], inputs: Any) -> HEForward:
    pre: Dict[int, Any] = {}
    act: Dict[int, Any] = {}
    for pos, blk in enumerate(blocks):
        if pos == 0:
            terms = [inputs]
        else:
            prev = blocks[pos - 1]
            x = pre[prev.index]
            if prev.activation in ("poly", "square"):
                sq = backend.square(x)
                terms = [sq, x] if prev.activation == "poly" else [sq]
            else:
                terms = [x]
            act[prev.index] = _materialise(backend, prev, poly, terms)
        pre[blk.index] = backend.linear(op=f"fwd{blk.index}", terms=terms, n_out=blk.n_pre)
    logits = pre.pop(blocks[-1].index)
    return HEForward(logits=logits, pre_activations=types.MappingProxyType(pre),
                     activations=types.MappingProxyType(act))


def _materialise(backend: Any, blk: HEBlockSpec, poly: Mapping[int, Tuple[float, float]], terms: list) -> Any:
    """The block output u = pool(act(x)) that the MPC needs (a branch off the critical path)."""
    if blk.pool_size:
        return backend.linear(op=f"act{blk.index}", terms=terms, n_out=blk.n_out)
    if blk.activation == "poly":
        a, b = poly[blk.index]
        return backend.add(backend.scale(terms[0], a), backend.scale(terms[1], b))
    return terms[0]


def run_backward(backend: Any, blocks: Tuple[HEBlockSpec, ...], poly: Mapping[int, Tuple[float, float]],
                 forward: HEForward, delta_logits: Any) -> HEBackward:
    delta = delta_logits
    d_pre: Dict[int, Any] = {}
    d_post: Dict[int, Any] = {}
    for pos in range(len(blocks) - 1, 0, -1):
        blk, prev = blocks[pos], blocks[pos - 1]
        x = forward.pre_activations[prev.index]
        if prev.activation == "poly":
            dh = backend.linear(op=f"bwd{blk.index}", terms=[delta], n_out=prev.n_pre)
            g = backend.linear(op=f"bwdg{blk.index}", terms=[delta], n_out=prev.n_pre)
            delta = backend.add(backend.mul(x, g), backend.scale(dh, poly[prev.index][1]))
            d_post[prev.index] = dh
        elif prev.activation == "square":
            g = backend.linear(op=f"bwdg{blk.index}", terms=[delta], n_out=prev.n_pre)
            delta = backend.mul(x, g)
        else:
            delta = backend.linear(op=f"bwd{blk.index}", terms=[delta], n_out=prev.n_pre)
        d_pre[prev.index] = delta
    first = blocks[0]
    d_in = backend.linear(op=f"bwd{first.index}", terms=[delta], n_out=first.n_in)
    return HEBackward(delta_input=d_in, delta_pre_activations=types.MappingProxyType(d_pre),
                      delta_post_activations=types.MappingProxyType(d_post))


def count_levels(*, model: ModelConfig, split_layer: int) -> Tuple[int, int]:
    """Deepest level of any forward / backward output, inputs counted as level 0."""
    blocks = _specs(model, split_layer, None)
    poly = {b.index: (1.0, 1.0) for b in blocks}
    be = LevelBackend()
    fwd = run_forward(be, blocks, poly, LevelTensor(blocks[0].n_in, 0))
    bwd = run_backward(be, blocks, poly, fwd, LevelTensor(blocks[-1].n_pre, 0))
    f = max([fwd.logits.level] + [t.level for t in (*fwd.pre_activations.values(), *fwd.activations.values())])
    b = max([bwd.delta_input.level] + [t.level for t in (*bwd.delta_pre_activations.values(),
                                                          *bwd.delta_post_activations.values())])
    return f, b


# ----------------------------------------------------------------- matrices of each op


@dataclass(frozen=True)
class _BlockWeights:
    matrix: sp.csr_matrix  # M_j
    bias: np.ndarray  # per pre-activation feature
    a: float
    b: float


def _op_matrices(blocks: Tuple[HEBlockSpec, ...], w: Mapping[int, _BlockWeights]):
    """op name -> (matrices per term, bias or None, n_out)."""
    ops = {}
    pools = {b.index: avgpool_matrix(shape=b.pre_shape, size=b.pool_size) if b.pool_size else None for b in blocks}
    for pos, blk in enumerate(blocks):
        m = w[blk.index].matrix
        if pos == 0:
            ops[f"fwd{blk.index}"] = ([m], w[blk.index].bias, blk.n_pre)
            ops[f"bwd{blk.index}"] = ([m.T.tocsr()], None, blk.n_in)
            continue
        prev = blocks[pos - 1]
        p = pools[prev.index]
        q = (m @ p).tocsr() if p is not None else m
        qt = q.T.tocsr()
        a, b = w[prev.index].a, w[prev.index].b
        if prev.activation == "poly":
            ops[f"fwd{blk.index}"] = ([a * q, b * q], w[blk.index].bias, blk.n_pre)
            ops[f"bwd{blk.index}"] = ([qt], None, prev.n_pre)
            ops[f"bwdg{blk.index}"] = ([(2.0 * a) * qt], None, prev.n_pre)
            if p is not None:
                ops[f"act{prev.index}"] = ([a * p, b * p], None, prev.n_out)
        elif prev.activation == "square":
            ops[f"fwd{blk.index}"] = ([q], w[blk.index].bias, blk.n_pre)
            ops[f"bwdg{blk.index}"] = ([2.0 * qt], None, prev.n_pre)
            if p is not None:
                ops[f"act{prev.index}"] = ([p], None, prev.n_out)
        else:
            ops[f"fwd{blk.index}"] = ([q], w[blk.index].bias, blk.n_pre)
            ops[f"bwd{blk.index}"] = ([qt], None, prev.n_pre)
            if p is not None:
                ops[f"act{prev.index}"] = ([p], None, prev.n_out)
    return ops


def _block_weights(blk: HEBlockSpec, weight: np.ndarray, bias: np.ndarray, a: float, b: float) -> _BlockWeights:
    if blk.type == "conv":
        m = conv_matrix(weight=weight, in_shape=blk.in_shape, stride=blk.stride, padding=blk.padding)
        c = conv_bias(bias=bias, out_hw=blk.pre_shape[1:])
    else:
        m = dense_matrix(weight=weight)
        c = np.asarray(bias, dtype=np.float64)
    return _BlockWeights(matrix=m, bias=c, a=a, b=b)


def _structural_weights(blocks: Tuple[HEBlockSpec, ...]) -> Dict[int, _BlockWeights]:
    """All-ones weights: the sparsity pattern no real weights can exceed."""
    out = {}
    for blk in blocks:
        if blk.type == "conv":
            shape = (blk.pre_shape[0], blk.in_shape[0], blk.kernel_size, blk.kernel_size)
            out[blk.index] = _block_weights(blk, np.ones(shape), np.ones(blk.pre_shape[0]), 1.0, 1.0)
        else:
            # a dense matrix: rows*cols ones (csr keeps them; zeros in real weights only drop entries)
            out[blk.index] = _block_weights(blk, np.ones((blk.n_pre, blk.n_in)), np.ones(blk.n_pre), 1.0, 1.0)
    return out


def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().double().numpy()
    return np.asarray(v, dtype=np.float64)


# ----------------------------------------------------------------- the public object


class HEHead:
    """Blocks ``split_layer+1..L`` of ``model`` under CKKS, for one slot layout.

    Built once per run from shapes only (its rotation keys depend on nothing else); weights are
    bound each step with :meth:`load_weights`.
    """

    def __init__(self, *, model: ModelConfig, split_layer: int, image_size: int, layout: SlotLayout) -> None:
        self.model = model
        self.split_layer = split_layer
        self.layout = layout
        self.blocks = _specs(model, split_layer, image_size)
        structure = _op_matrices(self.blocks, _structural_weights(self.blocks))
        self._babies = {name: choose_baby(matrices=mats, n_out=n, layout=layout)
                        for name, (mats, _, n) in structure.items()}
        idx = set()
        for name, (mats, bias, n) in structure.items():
            idx.update(build_plan(matrices=mats, bias=bias, n_out=n, layout=layout,
                                  baby=self._babies[name]).rotation_indices())
        self.rotation_indices: Tuple[int, ...] = tuple(sorted(idx))

    @property
    def n_inputs(self) -> int:
        return self.blocks[0].n_in

    @property
    def n_logits(self) -> int:
        return self.blocks[-1].n_pre

    def load_weights(self, *, state_dict: Mapping[str, Any]) -> HEWeights:
        """Prepare the HE blocks' public weights from a ``BlockModel`` state dict."""
        w = {}
        for blk in self.blocks:
            i = blk.index - 1
            layer = "conv" if blk.type == "conv" else "linear"
            try:
                weight = _to_numpy(state_dict[f"blocks.{i}.{layer}.weight"])
                bias = _to_numpy(state_dict[f"blocks.{i}.{layer}.bias"])
                a = b = 1.0
                if blk.activation == "poly":
                    a = float(_to_numpy(state_dict[f"blocks.{i}.act.a"]).reshape(-1)[0])
                    b = float(_to_numpy(state_dict[f"blocks.{i}.act.b"]).reshape(-1)[0])
            except KeyError as exc:
                raise WeightsError(
                    f"the state dict has no {exc.args[0]!r} for HE block {blk.index}: pass the state_dict() "
                    "of the BlockModel built from the same model config"
                ) from exc
            expect = ((blk.pre_shape[0], blk.in_shape[0], blk.kernel_size, blk.kernel_size)
                      if blk.type == "conv" else (blk.n_pre, blk.n_in))
            if weight.shape != expect:
                raise WeightsError(f"blocks.{i}.{layer}.weight has shape {weight.shape}; block {blk.index} needs {expect}")
            w[blk.index] = _block_weights(blk, weight, bias, a, b)
        plans = {
            name: build_plan(matrices=mats, bias=bias, n_out=n, layout=self.layout, baby=self._babies[name])
            for name, (mats, bias, n) in _op_matrices(self.blocks, w).items()
        }
        poly = {blk.index: (w[blk.index].a, w[blk.index].b) for blk in self.blocks}
        return HEWeights(plans=types.MappingProxyType(plans), poly=types.MappingProxyType(poly))

    def forward(self, *, cc: Any, weights: HEWeights, inputs: CKKSTensor,
                encoder: Optional[Executor] = None) -> HEForward:
        """Blocks split+1..L on the encrypted split activations (``n_inputs`` features).
        ``encoder``: threads that encode the weights' plaintexts ahead (:mod:`.linear`)."""
        self._check(inputs, self.n_inputs, "inputs")
        return run_forward(self._backend(cc, weights, encoder), self.blocks, weights.poly, inputs)

    def backward(self, *, cc: Any, weights: HEWeights, forward: HEForward, delta_logits: CKKSTensor,
                 encoder: Optional[Executor] = None) -> HEBackward:
        """Deltas of every HE layer from the encrypted ``delta_z`` (same weights as forward)."""
        self._check(delta_logits, self.n_logits, "delta_logits")
        return run_backward(self._backend(cc, weights, encoder), self.blocks, weights.poly, forward, delta_logits)

    def _backend(self, cc: Any, weights: HEWeights, encoder: Optional[Executor]) -> CKKSBackend:
        return CKKSBackend(cc=cc, layout=self.layout, plans=weights.plans, encoder=encoder)

    def _check(self, t: CKKSTensor, n: int, what: str) -> None:
        if not isinstance(t, CKKSTensor):
            raise LayoutError(f"{what} must be a CKKSTensor; got {type(t).__name__}")
        if t.layout != self.layout or t.n_features != n:
            raise LayoutError(
                f"{what} has {t.n_features} features under {t.layout}; the head needs {n} under {self.layout}"
            )
