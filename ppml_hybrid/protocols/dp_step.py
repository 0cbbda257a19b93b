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
from ppml_hybrid.smpc_stage import exact
from ppml_hybrid.smpc_stage.compare import ge_zero

# c_i uses C' = (1 - 2^-10) C: an accurate c passes the exact check with room.
CLIP_MARGIN_BITS = 10
# CrypTen's inv_sqrt is accurate for inputs in about [0.1, 100]: u = n / C'^2 is scaled by
# 256^-k for u above 25.6 * 256^(k-1), so the scaled value stays in [0.1, 25.6]; four ranges
# cover per-sample norms up to about 20,000 C (beyond that c is inaccurate and the exact check
# drops the sample rather than let it exceed C).
_RANGE_BASE = 25.6
_RANGE_STEP = 256
_RANGES = 4
_NEWTON_STEPS = 3
F = 16  # CrypTen's fixed-point bits (smpc_stage.party.PRECISION_BITS)
# n_i at or above 2^NORM_BITS drops the sample: keeps c' n_i and c' up(c' n_i) below 2^62 at scale 2^32.
NORM_BITS = 28


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


def _bits(x: float) -> int:
    return max(1, math.ceil(math.log2(max(x, 1.0))))


class _Exact:
    """Exact bounded arithmetic on raw shares for one party (step 1-2 helpers)."""

    def __init__(self, crypten: Any) -> None:
        self.crypten = crypten
        comm = crypten.comm.get()
        self.rank, self.parties = comm.get_rank(), comm.get_world_size()

    def reduce(self, raw: torch.Tensor, *, value_bits: int, scale_bits: int, shift: int) -> torch.Tensor:
        """|v| < 2^value_bits at scale 2^scale_bits -> scale 2^(scale_bits - shift), wrapped into range."""
        return exact.reduce(raw, bound_bits=value_bits + scale_bits, shift=shift, crypten=self.crypten)

    def reduce_up(self, raw: torch.Tensor, *, value_bits: int, scale_bits: int, shift: int) -> torch.Tensor:
        """As :meth:`reduce` for a non-negative value, rounded UP (an upper bound of v / 2^shift)."""
        out = self.reduce(raw, value_bits=value_bits, scale_bits=scale_bits, shift=shift)
        return out + self.parties if self.rank == 0 else out

    def const(self, value: int, like: torch.Tensor) -> torch.Tensor:
        """Shares of a public integer (party 0 holds it)."""
        return torch.full_like(like, value) if self.rank == 0 else torch.zeros_like(like)


def _conv_pieces(site: TrainableSite, ex: _Exact, pb: PieceBounds) -> _Pieces:
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
    total_bits = 2 * pb.conv_grad_bits + _bits(count)
    sq_norm = ex.reduce_up(sq, value_bits=total_bits, scale_bits=2 * F, shift=F)
    prefix = layer.param_prefix

    def weight(f: torch.Tensor) -> _ScaledSum:
        w = exact.mul(f.view(1, b, 1), g, crypten=ex.crypten).sum(1)  # (c, p*k*k) at 2^32
        return _ScaledSum(w.reshape(c, p, k, k).transpose(0, 1).contiguous(), 2 * F, (p, c, k, k))

    def bias_sum(f: torch.Tensor) -> _ScaledSum:
        return _ScaledSum(exact.mul(f.view(b, 1), bias, crypten=ex.crypten).sum(0), 2 * F, (p,))

    return _Pieces(sq_norm, {f"{prefix}.weight": weight, f"{prefix}.bias": bias_sum})


def _linear_pieces(site: TrainableSite, ex: _Exact, pb: PieceBounds) -> _Pieces:
    a, d = site.inputs.share, site.deltas.share
    b, n_in, n_out = a.size(0), a.size(1), d.size(1)
    a = ex.reduce(a, value_bits=pb.dense_input_bits, scale_bits=F, shift=0)
    d = ex.reduce(d, value_bits=pb.delta_bits, scale_bits=F, shift=0)
    # ||d||^2 at 2^16 and ||a||^2 + 1 at 2^s_a, both rounded up; their product must stay below 2^62.
    d_bits = 2 * pb.delta_bits + _bits(n_out)
    a_bits = 2 * pb.dense_input_bits + _bits(n_in + 1)
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


def _poly_pieces(site: TrainableSite, ex: _Exact, pb: PieceBounds) -> _Pieces:
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
    ex = _Exact(crypten)
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


def approximate_clip_factors(sq_norms: Any, *, params: DPStepParams) -> Any:
    """Step 3: ``c_i ~ min(1, C' / sqrt(n_i))`` (MPCTensor, approximate; step 4 makes it safe).

    ``u = n / C'^2`` is brought into CrypTen ``inv_sqrt``'s accurate range by one of
    ``_RANGES`` public scalings (256^k, chosen by comparisons with public thresholds and
    selected with 0/1 products, so no out-of-range value is ever multiplied), then
    ``_NEWTON_STEPS`` Newton steps ``r (3 - (u r) r) / 2``. Products are ordered so that no
    intermediate falls below fixed-point resolution (``u r`` ~ ||g|| / C, never ``r^2``).
    """
    u = sq_norms / (params.effective_clip ** 2)
    scaled, factor = u, u * 0.0 + 1.0  # factor: a fixed-point sharing of 1 (local)
    for k in range(1, _RANGES):
        # CrypTen's comparison bits are encoded at scale 1: multiply them only by sharings
        # (a public fraction times a scale-1 bit would be rounded to an integer).
        above = u > _RANGE_BASE * _RANGE_STEP ** (k - 1)  # 0/1, monotone in k
        step_u = u / float(_RANGE_STEP ** k) - u / float(_RANGE_STEP ** (k - 1))
        step_f = 1.0 / math.sqrt(_RANGE_STEP ** k) - 1.0 / math.sqrt(_RANGE_STEP ** (k - 1))
        scaled = scaled + above * step_u
        factor = factor + above * (u * 0.0 + step_f)
    r = scaled.inv_sqrt() * factor
    for _ in range(_NEWTON_STEPS):
        r = r * (3.0 - (u * r) * r) * 0.5
    c = r - (r - 1.0).relu()  # min(1, r)
    # One fixed-point unit less, and >= 0: c rounds down rather than up.
    return (c - 2.0 ** -F).relu()


def checked_factors(c: Any, sq_norm_raw: torch.Tensor, *, params: DPStepParams, crypten: Any) -> torch.Tensor:
    """Step 4: raw shares (scale 2^16) of ``f = c' [c' >= 0] [n < 2^NORM_BITS] [c' up(c' n) < C^2]``.

    ``c'`` is c reduced exactly into (-2, 2); ``up(c' n)`` rounds c' n up to 2^-16, so for
    ``c' >= 0`` the test implies ``c'^2 n < C^2`` (never ``c'^2`` first: at 2^-16 resolution it
    would swamp large norms). Every product stays below 2^62 when the tests it feeds pass.
    """
    ex = _Exact(crypten)
    c_red = ex.reduce(c.share, value_bits=1, scale_bits=F, shift=0)  # |c'| < 2, whatever c was
    cn = exact.mul(c_red, sq_norm_raw, crypten=crypten)  # at 2^32; below 2^62 when n < 2^NORM_BITS
    cn = ex.reduce_up(cn, value_bits=NORM_BITS + 1, scale_bits=2 * F, shift=F)  # >= c' n
    prod = exact.mul(c_red, cn, crypten=crypten)  # at 2^32, >= c'^2 n for c' >= 0
    limit = ex.const((1 << (NORM_BITS + F)) - 1, sq_norm_raw) - sq_norm_raw  # >= 0  <=>  n < 2^NORM_BITS
    c_sq = ex.const(int(math.floor(params.max_grad_norm ** 2 * 2.0 ** (2 * F))), prod) - prod  # > 0 <=> below C^2
    MPCTensor = crypten.mpc.MPCTensor
    tests = crypten.stack([MPCTensor.from_shares(limit, precision=0), MPCTensor.from_shares(c_sq - 1, precision=0)])
    passed = ge_zero(tests, crypten=crypten, bits=62)  # both |X| < 2^62 whenever the result matters
    nonneg = ge_zero(MPCTensor.from_shares(c_red, precision=0), crypten=crypten, bits=F + 1)
    ok = exact.mul(exact.mul(passed.share[0], passed.share[1], crypten=crypten), nonneg.share, crypten=crypten)
    return exact.mul(c_red, ok, crypten=crypten)


def clip_factors(sq_norms: Any, *, params: DPStepParams, crypten: Any) -> Any:
    """Steps 3-4 for an ``MPCTensor`` of squared norms (scale 2^16): the checked factors ``f``."""
    c = approximate_clip_factors(sq_norms, params=params)
    f = checked_factors(c, sq_norms.share, params=params, crypten=crypten)
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
                         bounds: PieceBounds = PieceBounds()) -> DPStepResult:
    """Steps 1-7 for one batch; returns the opened noised sums (and the unopened norms/factors)."""
    sq_norm, pieces = per_sample_pieces(sites, crypten=crypten, bounds=bounds)
    MPCTensor = crypten.mpc.MPCTensor
    n = MPCTensor.from_shares(sq_norm, precision=F)
    c = approximate_clip_factors(n, params=params)
    f = checked_factors(c, sq_norm, params=params, crypten=crypten)
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
                       crypten: Any) -> Dict[str, torch.Tensor]:
    """The step's released gradient sums: noised (steps 1-7), or with ``params=None`` (``dp=off``,
    non-private runs and benchmarks only) the exact batch sums, opened without clipping or noise."""
    if params is not None:
        return dict(noised_gradient_sums(sites, params=params, crypten=crypten).noised_sums)
    return {name: share.get_plain_text() for name, share in exact_batch_sums(sites).items()}
