"""DP-SGD under MPC: per-sample norms, clip factors, clipped sums, noise, with an exact bound.

Design section 5, steps 9-10. Every party runs :func:`noised_gradient_sums` on its shares of
the layer inputs and output deltas that the forward/backward kept (MPC layers directly; HE
layers once their activations and deltas are back as shares).

The sensitivity bound ``||c_i g_i|| < C`` holds with probability 1, whatever the forward and
backward produced (CrypTen's two-party truncation fails with probability ~|X|/2^64 per element
and leaves a value off by ~2^32; such garbage must not slip past the clip). So every quantity
between the per-sample gradients and the opening is exact ring arithmetic on BOUNDED values:

1. per-sample gradient pieces, reduced EXACTLY into public ranges (:func:`~ppml_hybrid.smpc_stage.exact.reduce`:
   a value inside its range is unchanged up to rounding, a value outside (garbage) is wrapped
   into it, never larger):

   * conv: the per-sample weight gradients ``G_i`` by one grouped Beaver convolution (exact, at
     2^32), reduced to ``|G'| < 2^conv_grad_bits`` at 2^16; per-sample bias gradients (sums of
     the deltas) reduced likewise;
   * dense: the input ``a'`` and delta ``d'`` reduced to ``2^dense_input_bits`` / ``2^delta_bits``
     (per-sample gradient ``d' a'^T`` and bias ``d'``);
   * polynomial ``a x^2 + b x``: the per-sample scalars ``s_a = sum d x^2``, ``s_b = sum d x``
     (from reduced x and d), reduced to ``2^poly_grad_bits``;

2. an upper bound ``n_i`` of ``||g_i||^2`` over exactly those pieces, by exact products and sums
   (dense: ``||d'||^2 (||a'||^2 + 1)``), each reduction rounded UP; the ranges make overflow
   impossible;
3. a clip factor ``c_i ~ min(1, C'/sqrt(n_i))`` (``C' = (1 - 2^-10) C``) by CrypTen's ``inv_sqrt``
   on ``u = n / C'^2`` brought into its range by one of four public powers of 256, then Newton
   steps (approximate: its errors are harmless, step 4 decides);
4. the exact check: ``c'`` = c reduced to (-2, 2); ``f_i = c'_i [c'_i >= 0] [n_i < 2^NORM_BITS]
   [c'_i up(c'_i n_i) < C^2]`` with exact comparisons on bounded values. So ``||f_i g_i||^2 <=
   c' up(c' n_i) < C^2`` for every sample, exactly;
5. clipped sums ``sum_i f_i g_i`` by exact Beaver products, with no truncation after step 4:
   conv and bias sums at scale 2^32, dense weights at 2^48;
6. noise (``protocols/dp_noise.py``), added by each party to its own share, at the sum's own
   scale: with ``dp.noise_source: enclave`` its share of K's one exact discrete Gaussian draw
   for the step (``N_Z(0, (sigma C 2^b)^2)``: the noise released is what the accountant
   credits); with ``parties`` its own ``N(0, sigma^2 C^2 / (n - 1))`` from ``os.urandom``
   (with one corrupted party the honest parties' noise alone has variance ``sigma^2 C^2``);
7. the noised sums are opened (the only values this protocol reveals) and divided by their
   public scale.

Who learns what: every party learns the noised gradient sums; the pieces, ``n_i``, ``c_i``,
``f_i``, the flags, the clipped sums and each party's noise stay secret (shares, or local to the
party that drew it; K's noise: each party only its uniform share). The reductions and comparisons open only values masked by fresh dealer
randomness (uniform).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ppml_hybrid.errors import ConfigError
from ppml_hybrid.protocols.dp_noise import NoiseShares, OwnNoise
from ppml_hybrid.protocols.exact_clip import (  # noqa: F401  (CLIP_MARGIN_BITS: tests read it here)
    CLIP_MARGIN_BITS, F, Exact, approximate_clip_factors, bits_for, checked_factors,
)
from ppml_hybrid.rpc.messages import NoiseSlot
from ppml_hybrid.smpc_stage import exact



@dataclass(frozen=True)
class DPStepParams:
    """What one DP step needs: clipping norm, noise multiplier, number of parties, and who draws
    the noise (``enclave``: K, one draw per step; ``parties``: each party its own share)."""

    max_grad_norm: float
    noise_multiplier: float
    parties: int
    noise_source: str = "parties"

    def __post_init__(self) -> None:
        if not self.max_grad_norm > 0:
            raise ConfigError(f"dp.max_grad_norm must be positive, got {self.max_grad_norm}")
        if self.max_grad_norm >= 2.0 ** 14:
            raise ConfigError(f"dp.max_grad_norm must be below 2^14 (the exact clip check's range), got "
                              f"{self.max_grad_norm}")
        if self.noise_multiplier < 0:
            raise ConfigError(f"dp.noise_multiplier must be non-negative, got {self.noise_multiplier}")
        if self.parties < 2:
            raise ConfigError(f"distributed noise needs at least 2 parties, got {self.parties}")
        if self.noise_source not in ("enclave", "parties"):
            raise ConfigError(f"dp.noise_source must be 'enclave' or 'parties', got {self.noise_source!r}")

    @property
    def released_noise_multiplier(self) -> float:
        """The noise the opening really carries, in units of C (the accountant credits ``noise_multiplier``)."""
        if self.noise_source == "enclave":
            return self.noise_multiplier
        return self.noise_multiplier * math.sqrt(self.parties / (self.parties - 1))

    @property
    def noise_std_per_party(self) -> float:
        """Each party's share of the noise: only the n-1 honest parties' noise is counted."""
        return self.noise_multiplier * self.max_grad_norm / math.sqrt(self.parties - 1)

    @property
    def effective_clip(self) -> float:
        return self.max_grad_norm * (1.0 - 2.0 ** -CLIP_MARGIN_BITS)


@dataclass(frozen=True)
class PieceBounds:
    """Public ranges (value bits: |v| < 2^bits) the per-sample pieces are reduced into (step 1).

    A legitimate value beyond its range is wrapped (that sample's gradient becomes wrong but
    stays bounded and clipped); the defaults sit far above what the demo model produces
    (per-sample conv gradients below 2^0, activations below 2^6, deltas below 2^0).
    """

    conv_grad_bits: int = 6
    dense_input_bits: int = 8
    delta_bits: int = 4
    poly_input_bits: int = 8
    poly_grad_bits: int = 12


@dataclass(frozen=True)
class TrainableSite:
    """One trainable layer's per-sample ingredients, as shares: its input and output delta."""

    layer: Any  # smpc_stage.layers.Conv2d | Linear | Poly
    inputs: Any
    saved: Any
    deltas: Any


@dataclass(frozen=True)
class DPStepResult:
    """Opened noised sums by parameter name; norms and clip factors stay shares."""

    noised_sums: Mapping[str, torch.Tensor]
    sq_norms: Any
    clip_factors: Any


def trainable_sites(layers: Sequence[Any], trace: Any, backward: Any) -> List[TrainableSite]:
    """The trainable layers of an MPC forward/backward (``MPCBlocks``), with their shares."""
    sites = []
    for layer, record in zip(layers, trace.records):
        trainable = layer.kind in ("conv", "linear") or (layer.kind == "poly" and layer.trainable)
        if trainable:
            sites.append(TrainableSite(layer, record.input, record.saved, backward.output_deltas[layer.name]))
    return sites


# ------------------------------------------------------------------ step 1-2: bounded pieces


@dataclass(frozen=True)
class _ScaledSum:
    """A clipped sum's raw shares and its public fixed-point scale 2^bits."""

    raw: torch.Tensor
    scale_bits: int
    shape: Tuple[int, ...]


@dataclass
class _Pieces:
    """One site's bounded per-sample pieces and how to sum them with the final factors."""

    sq_norm: torch.Tensor  # (b,) raw, scale 2^16, an upper bound of this site's ||g_i||^2
    summers: Dict[str, Any] = field(default_factory=dict)  # name -> f(factors raw) -> _ScaledSum


class _Level:
    """Independent exact operations of one level, run together: one adder pass for every
    reduction, one Beaver product for every elementwise product (rounds per level, not per site)."""

    def __init__(self, ex: Exact) -> None:
        self.ex = ex
        self._reduce: List[Tuple[str, torch.Tensor, int, int, int, bool]] = []
        self._mul: List[Tuple[str, torch.Tensor, torch.Tensor]] = []

    def reduce(self, key: str, raw: torch.Tensor, *, value_bits: int, scale_bits: int, shift: int,
               up: bool = False) -> None:
        self._reduce.append((key, raw, value_bits, scale_bits, shift, up))

    def mul(self, key: str, x: torch.Tensor, y: torch.Tensor) -> None:
        self._mul.append((key, x, y))

    def square(self, key: str, x: torch.Tensor) -> None:
        self._mul.append((key, x, x))

    def run(self) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        ex = self.ex
        if self._mul:
            xs = torch.cat([x.reshape(-1) for _, x, _ in self._mul])
            ys = torch.cat([y.reshape(-1) for _, _, y in self._mul])
            same = all(x is y for _, x, y in self._mul)
            prod = exact.square(xs, crypten=ex.crypten) if same else exact.mul(xs, ys, crypten=ex.crypten)
            start = 0
            for key, x, _ in self._mul:
                out[key] = prod[start:start + x.numel()].reshape(x.shape)
                start += x.numel()
        if self._reduce:
            results = exact.reduce_many([(raw, vb + sb, t) for _, raw, vb, sb, t, _ in self._reduce],
                                        crypten=ex.crypten)
            for (key, _, _, _, _, up), r in zip(self._reduce, results):
                out[key] = r + ex.parties if up and ex.rank == 0 else r
        return out


def per_sample_pieces(sites: Sequence[TrainableSite], *, crypten: Any,
                      bounds: PieceBounds = PieceBounds()) -> Tuple[torch.Tensor, List[_Pieces]]:
    """Steps 1-2: every site's bounded pieces and the summed upper bound n_i (raw, scale 2^16).

    Four levels, each one pass over all sites: (1) the raw per-sample pieces reduced into their
    ranges; (2) their squares, summed per sample and reduced (rounded up); (3) the dense layers'
    product ``||d||^2 (||a||^2 + 1)`` and the polynomial's per-sample scalars; (4) the latter's
    squares. See the module doc for the ranges and why nothing can overflow.
    """
    if not sites:
        raise ConfigError("the DP step needs at least one trainable layer")
    for site in sites:
        if site.layer.kind not in ("conv", "linear", "poly"):  # pragma: no cover - trainable_sites yields these
            raise ConfigError(f"no per-sample gradient for layer kind {site.layer.kind!r}")
    ex, pb = Exact(crypten), bounds
    geo: Dict[int, Dict[str, Any]] = {}

    lv = _Level(ex)  # level 1: the raw pieces, reduced into their ranges
    for i, site in enumerate(sites):
        kind, b = site.layer.kind, int(site.inputs.size(0))
        if kind == "conv":
            a, d, k = site.inputs, site.deltas, site.layer.weight.size(-1)
            c, p = int(a.size(1)), int(d.size(1))
            # G[ch, s*p + o] = corr(a[s, ch], d[s, o]) at 2^32: sample s only meets its own delta (groups=b)
            g = exact.conv2d(a.share.transpose(0, 1), d.share.reshape(b * p, 1, d.size(2), d.size(3)),
                             crypten=crypten, padding=site.layer.padding, dilation=site.layer.stride, groups=b)
            geo[i] = dict(b=b, c=c, p=p, k=k)
            lv.reduce(f"{i}.g", g[:, :, :k, :k].reshape(c, b, p * k * k), value_bits=pb.conv_grad_bits,
                      scale_bits=2 * F, shift=F)
            lv.reduce(f"{i}.bias", d.share.sum(3).sum(2), value_bits=pb.conv_grad_bits, scale_bits=F, shift=0)
        elif kind == "linear":
            geo[i] = dict(b=b, n_in=int(site.inputs.size(1)), n_out=int(site.deltas.size(1)))
            lv.reduce(f"{i}.a", site.inputs.share, value_bits=pb.dense_input_bits, scale_bits=F, shift=0)
            lv.reduce(f"{i}.d", site.deltas.share, value_bits=pb.delta_bits, scale_bits=F, shift=0)
        else:
            geo[i] = dict(b=b)
            lv.reduce(f"{i}.x", site.inputs.share.reshape(b, -1), value_bits=pb.poly_input_bits, scale_bits=F,
                      shift=0)
            lv.reduce(f"{i}.d", site.deltas.share.reshape(b, -1), value_bits=pb.delta_bits, scale_bits=F, shift=0)
    r = lv.run()

    sq = _Level(ex)  # level 2a: squares
    for i, site in enumerate(sites):
        for key in {"conv": ("g", "bias"), "linear": ("a", "d"), "poly": ("x",)}[site.layer.kind]:
            sq.square(f"{i}.{key}2", r[f"{i}.{key}"])
    r.update(sq.run())
    lv = _Level(ex)  # level 2b: per-sample sums of squares, reduced (rounded up)
    for i, site in enumerate(sites):
        kind, g = site.layer.kind, geo[i]
        if kind == "conv":
            count = g["c"] * g["p"] * g["k"] ** 2 + g["p"]
            total = r[f"{i}.g2"].sum(2).sum(0) + r[f"{i}.bias2"].sum(1)
            lv.reduce(f"{i}.n", total, value_bits=2 * pb.conv_grad_bits + bits_for(count), scale_bits=2 * F,
                      shift=F, up=True)
        elif kind == "linear":
            g["d_bits"] = 2 * pb.delta_bits + bits_for(g["n_out"])
            g["a_bits"] = 2 * pb.dense_input_bits + bits_for(g["n_in"] + 1)
            # ||d||^2 at 2^16 and ||a||^2 + 1 at 2^s_a: their product must stay below 2^62
            g["s_a"] = min(F, 61 - (F + g["d_bits"]) - g["a_bits"])
            if g["s_a"] < 4:
                raise ConfigError(f"dense layer {site.layer.param_prefix} ({g['n_in']} -> {g['n_out']}) is too wide "
                                  "for the exact clip check's 64-bit ring at these piece bounds")
            lv.reduce(f"{i}.dd", r[f"{i}.d2"].sum(1), value_bits=g["d_bits"], scale_bits=2 * F, shift=F, up=True)
            aa = r[f"{i}.a2"].sum(1) + ex.const(1 << (2 * F), r[f"{i}.a2"][:, 0])
            lv.reduce(f"{i}.aa", aa, value_bits=g["a_bits"], scale_bits=2 * F, shift=2 * F - g["s_a"], up=True)
        else:
            lv.reduce(f"{i}.x2r", r[f"{i}.x2"], value_bits=2 * pb.poly_input_bits, scale_bits=2 * F, shift=F)
    r.update(lv.run())

    pr = _Level(ex)  # level 3a: products
    for i, site in enumerate(sites):
        if site.layer.kind == "linear":
            pr.mul(f"{i}.prod", r[f"{i}.dd"], r[f"{i}.aa"])
        elif site.layer.kind == "poly":
            pr.mul(f"{i}.dx2", r[f"{i}.d"], r[f"{i}.x2r"])
            pr.mul(f"{i}.dx", r[f"{i}.d"], r[f"{i}.x"])
    r.update(pr.run())
    lv = _Level(ex)  # level 3b
    for i, site in enumerate(sites):
        g = geo[i]
        if site.layer.kind == "linear":
            lv.reduce(f"{i}.n", r[f"{i}.prod"], value_bits=g["d_bits"] + g["a_bits"], scale_bits=F + g["s_a"],
                      shift=g["s_a"], up=True)
        elif site.layer.kind == "poly":  # per-sample sums at 2^32 (wrap for garbage: reduced here)
            lv.reduce(f"{i}.sa", r[f"{i}.dx2"].sum(1), value_bits=pb.poly_grad_bits, scale_bits=2 * F, shift=F)
            lv.reduce(f"{i}.sb", r[f"{i}.dx"].sum(1), value_bits=pb.poly_grad_bits, scale_bits=2 * F, shift=F)
    r.update(lv.run())

    polys = [i for i, site in enumerate(sites) if site.layer.kind == "poly"]
    if polys:  # level 4: the polynomial's squared scalars
        sq = _Level(ex)
        for i in polys:
            sq.square(f"{i}.sa2", r[f"{i}.sa"])
            sq.square(f"{i}.sb2", r[f"{i}.sb"])
        r.update(sq.run())
        lv = _Level(ex)
        for i in polys:
            lv.reduce(f"{i}.n", r[f"{i}.sa2"] + r[f"{i}.sb2"], value_bits=2 * pb.poly_grad_bits + 1,
                      scale_bits=2 * F, shift=F, up=True)
        r.update(lv.run())

    pieces = [_summers(site, i, r, geo[i], ex) for i, site in enumerate(sites)]
    total = pieces[0].sq_norm
    for piece in pieces[1:]:
        total = total + piece.sq_norm
    return total, pieces


def _summers(site: TrainableSite, i: int, r: Dict[str, torch.Tensor], g: Dict[str, Any], ex: Exact) -> _Pieces:
    """Step 5's clipped sums of one site: which bounded piece each sum weights by f (batch along
    ``dim``), and how the weighted piece becomes the sum (exact: no truncation)."""
    crypten, prefix, kind = ex.crypten, site.layer.param_prefix, site.layer.kind
    if kind == "conv":
        c, p, k = g["c"], g["p"], g["k"]

        def conv_weight(w: Dict[str, torch.Tensor]) -> _ScaledSum:
            total = w[f"{i}.g"].sum(1)  # (c, p*k*k) at 2^32
            return _ScaledSum(total.reshape(c, p, k, k).transpose(0, 1).contiguous(), 2 * F, (p, c, k, k))

        return _Pieces(r[f"{i}.n"], {
            f"{prefix}.weight": ((f"{i}.g", r[f"{i}.g"], 1), conv_weight),
            f"{prefix}.bias": ((f"{i}.bias", r[f"{i}.bias"], 0), lambda w: _ScaledSum(w[f"{i}.bias"].sum(0), 2 * F, (p,))),
        })
    if kind == "linear":
        a = r[f"{i}.a"]

        def dense_weight(w: Dict[str, torch.Tensor]) -> _ScaledSum:  # one Beaver matmul: at 2^48
            return _ScaledSum(exact.matmul(w[f"{i}.d"].t(), a, crypten=crypten), 3 * F, (g["n_out"], g["n_in"]))

        return _Pieces(r[f"{i}.n"], {
            f"{prefix}.weight": ((f"{i}.d", r[f"{i}.d"], 0), dense_weight),
            f"{prefix}.bias": ((f"{i}.d", r[f"{i}.d"], 0), lambda w: _ScaledSum(w[f"{i}.d"].sum(0), 2 * F, (g["n_out"],))),
        })
    return _Pieces(r[f"{i}.n"], {
        f"{prefix}.a": ((f"{i}.sa", r[f"{i}.sa"], 0), lambda w: _ScaledSum(w[f"{i}.sa"].sum().reshape(1), 2 * F, (1,))),
        f"{prefix}.b": ((f"{i}.sb", r[f"{i}.sb"], 0), lambda w: _ScaledSum(w[f"{i}.sb"].sum().reshape(1), 2 * F, (1,))),
    })


def clipped_sums(pieces: Sequence[_Pieces], f: torch.Tensor, *, crypten: Any) -> Dict[str, _ScaledSum]:
    """Step 5: every piece weighted by f in ONE Beaver product (f expanded along each piece's
    batch dimension), then each sum formed (dense weights: one Beaver matmul each)."""
    requests: Dict[str, Tuple[torch.Tensor, int]] = {}
    for piece in pieces:
        for (key, tensor, dim), _ in piece.summers.values():
            requests[key] = (tensor, dim)
    lv = _Level(Exact(crypten))
    for key, (tensor, dim) in requests.items():
        shape = [1] * tensor.dim()
        shape[dim] = f.numel()
        lv.mul(key, f.view(shape).expand(tensor.shape).contiguous(), tensor)
    weighted = lv.run()
    return {name: finish(weighted) for piece in pieces for name, (_, finish) in piece.summers.items()}


# ------------------------------------------------------------------ steps 3-4: clip factors


def clip_factors(sq_norms: Any, *, params: DPStepParams, crypten: Any) -> Any:
    """Steps 3-4 for an ``MPCTensor`` of squared norms (scale 2^16): the checked factors ``f``."""
    c = approximate_clip_factors(sq_norms, bound=params.max_grad_norm, crypten=crypten)
    f = checked_factors(c, sq_norms.share, bound=params.max_grad_norm, crypten=crypten)
    return crypten.mpc.MPCTensor.from_shares(f, precision=F)


# ------------------------------------------------------------------ steps 5-7: sums, noise, opening


def noise_for(params: DPStepParams, noise: Optional[NoiseShares]) -> NoiseShares:
    """The step's noise source; K's noise must be given (never a silent fall-back to the parties')."""
    if noise is not None:
        return noise
    if params.noise_source == "enclave" and params.noise_multiplier > 0:
        raise ConfigError("dp.noise_source=enclave: this step was given no channel to K's noise (the party must "
                          "verify K first); refusing to open the sums without it")
    return OwnNoise(std=params.noise_std_per_party)


def add_noise_shares(raws: Mapping[str, torch.Tensor], scale_bits: Mapping[str, int], *,
                     noise: NoiseShares) -> Dict[str, torch.Tensor]:
    """Step 6: this party's noise share of every sum, at the sum's own scale, added to its own raw share."""
    slots = [NoiseSlot(name=name, count=int(raw.numel()), scale_bits=int(scale_bits[name])) for name, raw in raws.items()]
    shares = noise(slots)
    return {name: raw + shares[name].reshape(raw.shape) for name, raw in raws.items()}


def _open_all(raws: Mapping[str, torch.Tensor], scale_bits: Mapping[str, int], *,
              crypten: Any) -> Dict[str, torch.Tensor]:
    """Step 7: one opening of every noised sum, each divided by its public scale."""
    flat = torch.cat([raws[name].reshape(-1) for name in raws])
    opened = crypten.mpc.MPCTensor.from_shares(flat, precision=0).reveal().double()
    out, start = {}, 0
    for name, raw in raws.items():
        out[name] = opened[start:start + raw.numel()].reshape(raw.shape) / 2.0 ** scale_bits[name]
        start += raw.numel()
    return out


def noised_gradient_sums(sites: Sequence[TrainableSite], *, params: DPStepParams, crypten: Any,
                         bounds: PieceBounds = PieceBounds(), row_weights: Optional[Any] = None,
                         noise: Optional[NoiseShares] = None) -> DPStepResult:
    """Steps 1-7 for one batch; returns the opened noised sums (and the unopened norms/factors).

    ``row_weights``: secret 0/1 per row (scale 1); padding rows (weight 0) get factor 0.
    ``noise``: this party's noise shares (required for ``dp.noise_source: enclave``).
    """
    sq_norm, pieces = per_sample_pieces(sites, crypten=crypten, bounds=bounds)
    MPCTensor = crypten.mpc.MPCTensor
    n = MPCTensor.from_shares(sq_norm, precision=F)
    c = approximate_clip_factors(n, bound=params.max_grad_norm, crypten=crypten)
    f = checked_factors(c, sq_norm, bound=params.max_grad_norm, crypten=crypten)
    if row_weights is not None:
        f = exact.mul(f, row_weights.share, crypten=crypten)  # 0/1 at scale 1: exact
    sums = clipped_sums(pieces, f, crypten=crypten)
    scales = {name: t.scale_bits for name, t in sums.items()}
    raws = add_noise_shares({name: t.raw for name, t in sums.items()}, scales, noise=noise_for(params, noise))
    opened = _open_all(raws, scales, crypten=crypten)
    opened = {name: opened[name].float().reshape(t.shape) for name, t in sums.items()}
    return DPStepResult(noised_sums=opened, sq_norms=n, clip_factors=MPCTensor.from_shares(f, precision=F))


def noise_only_sums(shapes: Mapping[str, Tuple[int, ...]], *, params: Optional[DPStepParams],
                    crypten: Any, noise: Optional[NoiseShares] = None) -> Dict[str, torch.Tensor]:
    """An empty batch still releases a step: the noise alone, opened (steps 6-7)."""
    raws = {name: torch.zeros(tuple(shape), dtype=torch.long) for name, shape in shapes.items()}
    scales = {name: 2 * F for name in raws}
    if params is not None:
        raws = add_noise_shares(raws, scales, noise=noise_for(params, noise))
    opened = _open_all(raws, scales, crypten=crypten)
    return {name: value.float() for name, value in opened.items()}


# ------------------------------------------------------------------ dp=off (non-private reference)


def exact_batch_sums(sites: Sequence[TrainableSite]) -> Dict[str, Any]:
    """``dp=off``: the plain batch sums of every parameter's gradient, as shares."""
    sums: Dict[str, Any] = {}
    for site in sites:
        if site.layer.kind in ("linear", "conv"):
            sums.update(site.layer.weight_grads(site.saved, site.deltas))
        else:
            x, x2 = site.saved.tensors
            d = site.deltas
            prefix = site.layer.param_prefix
            sums[f"{prefix}.a"] = (d * x2).reshape(d.size(0), -1).sum(1).sum().reshape(1)
            sums[f"{prefix}.b"] = (d * x).reshape(d.size(0), -1).sum(1).sum().reshape(1)
    return sums


def open_gradient_sums(sites: Sequence[TrainableSite], *, params: Optional[DPStepParams],
                       crypten: Any, row_weights: Optional[Any] = None,
                       noise: Optional[NoiseShares] = None) -> Dict[str, torch.Tensor]:
    """The step's released gradient sums: noised (steps 1-7), or with ``params=None`` (``dp=off``,
    non-private runs and benchmarks only) the exact batch sums, opened without clipping or noise."""
    if params is not None:
        return dict(noised_gradient_sums(sites, params=params, crypten=crypten, row_weights=row_weights,
                                         noise=noise).noised_sums)
    if row_weights is not None:
        raise ConfigError("padding rows are for DP runs only (dp=off opens exact sums without row weights)")
    return {name: share.get_plain_text() for name, share in exact_batch_sums(sites).items()}
