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
6. noise: each party adds ``N(0, sigma^2 C^2 / (n - 1))`` from ``os.urandom``, rounded at the
   sum's scale, to its own share (no communication). With one corrupted party the honest
   parties' noise alone has variance ``sigma^2 C^2``; the accountant is given ``sigma``;
7. the noised sums are opened (the only values this protocol reveals) and divided by their
   public scale.

Who learns what: every party learns the noised gradient sums; the pieces, ``n_i``, ``c_i``,
``f_i``, the flags, the clipped sums and each party's noise stay secret (shares, or local to the
party that drew it). The reductions and comparisons open only values masked by fresh dealer
randomness (uniform).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ppml_hybrid.errors import ConfigError
from ppml_hybrid.privacy.csprng import csprng_normal
from ppml_hybrid.protocols.exact_clip import (  # noqa: F401  (CLIP_MARGIN_BITS: tests read it here)
    CLIP_MARGIN_BITS, F, Exact, approximate_clip_factors, bits_for, checked_factors,
)
from ppml_hybrid.smpc_stage import exact



@dataclass(frozen=True)
class DPStepParams:
    """What one DP step needs: clipping norm, noise multiplier, number of parties."""

    max_grad_norm: float
    noise_multiplier: float
    parties: int

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


def _conv_pieces(site: TrainableSite, ex: Exact, pb: PieceBounds) -> _Pieces:
    layer, a, d = site.layer, site.inputs, site.deltas
    b, c = a.size(0), a.size(1)
    p, k = d.size(1), layer.weight.size(-1)
    # G[ch, s*p + o] = corr(a[s, ch], d[s, o]) at 2^32: sample s only meets its own delta (groups=b).
    g = exact.conv2d(a.share.transpose(0, 1), d.share.reshape(b * p, 1, d.size(2), d.size(3)),
                     crypten=ex.crypten, padding=layer.padding, dilation=layer.stride, groups=b)
    g = g[:, :, :k, :k].reshape(c, b, p * k * k)
    g = ex.reduce(g, value_bits=pb.conv_grad_bits, scale_bits=2 * F, shift=F)  # (c, b, pkk) at 2^16
    bias = ex.reduce(d.share.sum(3).sum(2), value_bits=pb.conv_grad_bits, scale_bits=F, shift=0)  # (b, p)
    count = c * p * k * k + p
    sq = exact.square(g, crypten=ex.crypten).sum(2).sum(0) + exact.square(bias, crypten=ex.crypten).sum(1)
    total_bits = 2 * pb.conv_grad_bits + bits_for(count)
    sq_norm = ex.reduce_up(sq, value_bits=total_bits, scale_bits=2 * F, shift=F)
    prefix = layer.param_prefix

    def weight(f: torch.Tensor) -> _ScaledSum:
        w = exact.mul(f.view(1, b, 1), g, crypten=ex.crypten).sum(1)  # (c, p*k*k) at 2^32
        return _ScaledSum(w.reshape(c, p, k, k).transpose(0, 1).contiguous(), 2 * F, (p, c, k, k))

    def bias_sum(f: torch.Tensor) -> _ScaledSum:
        return _ScaledSum(exact.mul(f.view(b, 1), bias, crypten=ex.crypten).sum(0), 2 * F, (p,))

    return _Pieces(sq_norm, {f"{prefix}.weight": weight, f"{prefix}.bias": bias_sum})


def _linear_pieces(site: TrainableSite, ex: Exact, pb: PieceBounds) -> _Pieces:
    a, d = site.inputs.share, site.deltas.share
    b, n_in, n_out = a.size(0), a.size(1), d.size(1)
    a = ex.reduce(a, value_bits=pb.dense_input_bits, scale_bits=F, shift=0)
    d = ex.reduce(d, value_bits=pb.delta_bits, scale_bits=F, shift=0)
    # ||d||^2 at 2^16 and ||a||^2 + 1 at 2^s_a, both rounded up; their product must stay below 2^62.
    d_bits = 2 * pb.delta_bits + bits_for(n_out)
    a_bits = 2 * pb.dense_input_bits + bits_for(n_in + 1)
    s_a = min(F, 61 - (F + d_bits) - a_bits)
    if s_a < 4:
        raise ConfigError(f"dense layer {site.layer.param_prefix} ({n_in} -> {n_out}) is too wide for the exact "
                          "clip check's 64-bit ring at these piece bounds; lower dp piece bounds")
    dd = ex.reduce_up(exact.square(d, crypten=ex.crypten).sum(1), value_bits=d_bits, scale_bits=2 * F, shift=F)
    aa = exact.square(a, crypten=ex.crypten).sum(1) + ex.const(1 << (2 * F), a[:, 0])
    aa = ex.reduce_up(aa, value_bits=a_bits, scale_bits=2 * F, shift=2 * F - s_a)
    sq_norm = ex.reduce_up(exact.mul(dd, aa, crypten=ex.crypten), value_bits=d_bits + a_bits,
                           scale_bits=F + s_a, shift=s_a)
    prefix = site.layer.param_prefix

    def scaled_deltas(f: torch.Tensor) -> torch.Tensor:
        return exact.mul(f.view(b, 1), d, crypten=ex.crypten)  # (b, out) at 2^32

    def weight(f: torch.Tensor) -> _ScaledSum:
        return _ScaledSum(exact.matmul(scaled_deltas(f).t(), a, crypten=ex.crypten), 3 * F, (n_out, n_in))

    def bias_sum(f: torch.Tensor) -> _ScaledSum:
        return _ScaledSum(scaled_deltas(f).sum(0), 2 * F, (n_out,))

    return _Pieces(sq_norm, {f"{prefix}.weight": weight, f"{prefix}.bias": bias_sum})


def _poly_pieces(site: TrainableSite, ex: Exact, pb: PieceBounds) -> _Pieces:
    b = site.inputs.size(0)
    x = ex.reduce(site.inputs.share.reshape(b, -1), value_bits=pb.poly_input_bits, scale_bits=F, shift=0)
    d = ex.reduce(site.deltas.share.reshape(b, -1), value_bits=pb.delta_bits, scale_bits=F, shift=0)
    x2 = ex.reduce(exact.square(x, crypten=ex.crypten), value_bits=2 * pb.poly_input_bits, scale_bits=2 * F, shift=F)
    s_a = exact.mul(d, x2, crypten=ex.crypten).sum(1)  # at 2^32 (may wrap for garbage: reduced next)
    s_b = exact.mul(d, x, crypten=ex.crypten).sum(1)
    s_a = ex.reduce(s_a, value_bits=pb.poly_grad_bits, scale_bits=2 * F, shift=F)
    s_b = ex.reduce(s_b, value_bits=pb.poly_grad_bits, scale_bits=2 * F, shift=F)
    sq = exact.square(s_a, crypten=ex.crypten) + exact.square(s_b, crypten=ex.crypten)
    sq_norm = ex.reduce_up(sq, value_bits=2 * pb.poly_grad_bits + 1, scale_bits=2 * F, shift=F)
    prefix = site.layer.param_prefix

    def grad(s: torch.Tensor):
        return lambda f: _ScaledSum(exact.mul(f, s, crypten=ex.crypten).sum().reshape(1), 2 * F, (1,))

    return _Pieces(sq_norm, {f"{prefix}.a": grad(s_a), f"{prefix}.b": grad(s_b)})


def per_sample_pieces(sites: Sequence[TrainableSite], *, crypten: Any,
                      bounds: PieceBounds = PieceBounds()) -> Tuple[torch.Tensor, List[_Pieces]]:
    """Steps 1-2: every site's bounded pieces and the summed upper bound n_i (raw, scale 2^16)."""
    if not sites:
        raise ConfigError("the DP step needs at least one trainable layer")
    ex = Exact(crypten)
    builders = {"conv": _conv_pieces, "linear": _linear_pieces, "poly": _poly_pieces}
    pieces = []
    for site in sites:
        kind = site.layer.kind
        if kind not in builders:  # pragma: no cover - trainable_sites only yields the kinds above
            raise ConfigError(f"no per-sample gradient for layer kind {kind!r}")
        pieces.append(builders[kind](site, ex, bounds))
    total = pieces[0].sq_norm
    for p in pieces[1:]:
        total = total + p.sq_norm
    return total, pieces


# ------------------------------------------------------------------ steps 3-4: clip factors


def clip_factors(sq_norms: Any, *, params: DPStepParams, crypten: Any) -> Any:
    """Steps 3-4 for an ``MPCTensor`` of squared norms (scale 2^16): the checked factors ``f``."""
    c = approximate_clip_factors(sq_norms, bound=params.max_grad_norm)
    f = checked_factors(c, sq_norms.share, bound=params.max_grad_norm, crypten=crypten)
    return crypten.mpc.MPCTensor.from_shares(f, precision=F)


# ------------------------------------------------------------------ steps 5-7: sums, noise, opening


def add_noise_share(raw: torch.Tensor, *, std: float, scale_bits: int) -> torch.Tensor:
    """Step 6: this party's noise, rounded at scale 2^scale_bits, added to its own raw share."""
    if std == 0.0:
        return raw
    noise = csprng_normal(tuple(raw.size()), std=std)
    return raw + torch.round(noise * 2.0 ** scale_bits).long()


def _open(raw: torch.Tensor, *, scale_bits: int, crypten: Any) -> torch.Tensor:
    opened = crypten.mpc.MPCTensor.from_shares(raw, precision=0).reveal()
    return opened.double() / 2.0 ** scale_bits


def noised_gradient_sums(sites: Sequence[TrainableSite], *, params: DPStepParams, crypten: Any,
                         bounds: PieceBounds = PieceBounds(), row_weights: Optional[Any] = None) -> DPStepResult:
    """Steps 1-7 for one batch; returns the opened noised sums (and the unopened norms/factors).

    ``row_weights``: secret 0/1 per row (scale 1); padding rows (weight 0) get factor 0.
    """
    sq_norm, pieces = per_sample_pieces(sites, crypten=crypten, bounds=bounds)
    MPCTensor = crypten.mpc.MPCTensor
    n = MPCTensor.from_shares(sq_norm, precision=F)
    c = approximate_clip_factors(n, bound=params.max_grad_norm)
    f = checked_factors(c, sq_norm, bound=params.max_grad_norm, crypten=crypten)
    if row_weights is not None:
        f = exact.mul(f, row_weights.share, crypten=crypten)  # 0/1 at scale 1: exact
    opened = {}
    for piece in pieces:
        for name, summer in piece.summers.items():
            s = summer(f)
            raw = add_noise_share(s.raw, std=params.noise_std_per_party, scale_bits=s.scale_bits)
            opened[name] = _open(raw, scale_bits=s.scale_bits, crypten=crypten).float().reshape(s.shape)
    return DPStepResult(noised_sums=opened, sq_norms=n, clip_factors=MPCTensor.from_shares(f, precision=F))


def noise_only_sums(shapes: Mapping[str, Tuple[int, ...]], *, params: Optional[DPStepParams],
                    crypten: Any) -> Dict[str, torch.Tensor]:
    """An empty batch still releases a step: each party's noise alone, opened (steps 6-7)."""
    out = {}
    for name, shape in shapes.items():
        raw = torch.zeros(tuple(shape), dtype=torch.long)
        std = params.noise_std_per_party if params is not None else 0.0
        out[name] = _open(add_noise_share(raw, std=std, scale_bits=2 * F), scale_bits=2 * F,
                          crypten=crypten).float()
    return out


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
                       crypten: Any, row_weights: Optional[Any] = None) -> Dict[str, torch.Tensor]:
    """The step's released gradient sums: noised (steps 1-7), or with ``params=None`` (``dp=off``,
    non-private runs and benchmarks only) the exact batch sums, opened without clipping or noise."""
    if params is not None:
        return dict(noised_gradient_sums(sites, params=params, crypten=crypten, row_weights=row_weights).noised_sums)
    if row_weights is not None:
        raise ConfigError("padding rows are for DP runs only (dp=off opens exact sums without row weights)")
    return {name: share.get_plain_text() for name, share in exact_batch_sums(sites).items()}
