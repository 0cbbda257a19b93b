"""DP-SGD under MPC: per-sample norms, clip factors, clipped sums, distributed noise.

Design section 5, steps 9-10. Every party runs :func:`noised_gradient_sums` on its shares of
the layer inputs and output deltas that the forward/backward kept (MPC layers directly; HE
layers once their activations and deltas are back as shares).

Steps:

1. per-sample squared gradient norm ``n_i`` over every trainable parameter, without opening
   anything: dense ``||delta_i||^2 (||a_i||^2 + 1)``; conv: the per-sample weight gradients by
   one grouped convolution (the batch as groups, so ``p*d`` values per sample instead of a
   ``T x T`` ghost-norm Gram matrix) plus the bias sums; polynomial ``a x^2 + b x``:
   ``(sum delta x^2)^2 + (sum delta x)^2``;
2. ``u_i = n_i / C'^2`` with ``C' = (1 - 2^-CLIP_MARGIN_BITS) C``; ``r_i ~ u_i^(-1/2)`` by
   CrypTen's ``inv_sqrt`` on ``u`` brought into its accurate range by a public power of 256
   (three comparisons with public thresholds select it), then Newton steps; ``c_i = min(1, r_i)``;
3. a check in MPC: ``t_i = c_i^2 n_i / C^2 < 1``, else ``c_i = 0``. So ``c_i ||g_i|| < C``
   whatever the approximation error of step 2 (an accurate ``c_i`` gives ``t_i ~ (C'/C)^2``
   and passes; the margin also covers the fixed-point error of ``n_i``);
4. clipped sums ``sum_i c_i g_i``, per layer the cheapest of: the per-sample gradients of
   step 1 re-weighted and summed, or the batch-summed weight gradient (one Beaver product)
   of re-weighted inputs or re-weighted deltas (:func:`clipped_sums`);
5. noise: each party adds ``N(0, sigma^2 C^2 / (n - 1))`` from ``os.urandom`` to its own
   share of every summed gradient (no communication). With one corrupted party, the honest
   parties' noise alone has variance ``sigma^2 C^2``; the total is ``n / (n - 1)`` times
   Opacus's, and the accountant is given ``sigma``;
6. the noised sums are opened: the only values this protocol reveals.

Who learns what: every party learns the noised gradient sums; ``n_i``, ``c_i``, ``t_i``, the
clipped sums and each party's noise stay secret (shares, or local to the party that drew it).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from ppml_hybrid.errors import ConfigError
from ppml_hybrid.privacy.csprng import csprng_normal

# c_i uses C' = (1 - 2^-10) C: covers the fixed-point error of n_i (relative ~1e-4).
CLIP_MARGIN_BITS = 10
# CrypTen's inv_sqrt is accurate for inputs in about [0.1, 100]: u = n / C'^2 is scaled by
# 256^-k for u above 25.6 * 256^(k-1), so the scaled value stays in [0.1, 25.6]; four ranges
# cover per-sample norms up to about 20,000 C (beyond that c is inaccurate and the check drops
# the sample rather than let it exceed C).
_RANGE_BASE = 25.6
_RANGE_STEP = 256
_RANGES = 4
_NEWTON_STEPS = 3
_FIXED_POINT_BITS = 16  # CrypTen's precision here (smpc_stage.party.PRECISION_BITS)


@dataclass(frozen=True)
class DPStepParams:
    """What one DP step needs: clipping norm, noise multiplier, number of parties."""

    max_grad_norm: float
    noise_multiplier: float
    parties: int

    def __post_init__(self) -> None:
        if not self.max_grad_norm > 0:
            raise ConfigError(f"dp.max_grad_norm must be positive, got {self.max_grad_norm}")
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


def _batch_sum(t: Any) -> Any:
    """Sum over every dimension but the first."""
    return t.reshape(t.size(0), -1).sum(1)


def per_sample_sq_norms(sites: Sequence[TrainableSite], *, keep: Optional[Dict[str, Any]] = None) -> Any:
    """Step 1: ``n_i``, the squared norm of sample i's gradient over all sites (shares).

    ``keep``, if given, receives each conv site's per-sample gradients (:class:`ConvPerSample`,
    by layer name) so that step 4 can reuse them instead of another Beaver convolution.
    """
    total = None
    for site in sites:
        kind = site.layer.kind
        if kind == "linear":
            a, d = site.inputs, site.deltas
            contrib = _batch_sum(d.square()) * (_batch_sum(a.square()) + 1.0)
        elif kind == "conv":
            grads = conv_per_sample_grads(site)
            if keep is not None:
                keep[site.layer.name] = grads
            contrib = grads.weight.square().sum(2).sum(0) + _batch_sum(grads.bias.square())
        elif kind == "poly":
            x, d = site.inputs, site.deltas
            x2 = site.saved.tensors[1]
            contrib = _batch_sum(d * x2).square() + _batch_sum(d * x).square()
        else:  # pragma: no cover - trainable_sites only yields the kinds above
            raise ConfigError(f"no per-sample norm for layer kind {kind!r}")
        total = contrib if total is None else total + contrib
    if total is None:
        raise ConfigError("the DP step needs at least one trainable layer")
    return total


@dataclass(frozen=True)
class ConvPerSample:
    """One conv layer's per-sample gradients, as shares."""

    weight: Any  # (in channels, batch, out channels * k * k): sample s's dW[o, i, kh, kw] at [i, s, (o, kh, kw)]
    bias: Any  # (batch, out channels)


def conv_per_sample_grads(site: TrainableSite) -> ConvPerSample:
    """Per-sample conv weight gradients by one grouped convolution (one Beaver convolution)."""
    layer, a, d = site.layer, site.inputs, site.deltas
    b, c = a.size(0), a.size(1)
    p, k = d.size(1), layer.weight.size(-1)
    # out[ch, s*p + o] = corr(a[s, ch], d[s, o]): sample s only meets its own delta (groups=b).
    grads = a.transpose(0, 1).conv2d(
        d.reshape(b * p, 1, d.size(2), d.size(3)), padding=layer.padding, dilation=layer.stride, groups=b
    )
    return ConvPerSample(weight=grads[:, :, :k, :k].reshape(c, b, p * k * k), bias=d.sum(3).sum(2))


def clip_factors(sq_norms: Any, *, params: DPStepParams) -> Any:
    """Steps 2-3: ``c_i = min(1, C' / sqrt(n_i))``, zeroed wherever ``c_i^2 n_i >= C^2``.

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
    # One fixed-point unit less, and >= 0: c rounds down rather than up (for a norm of 1,000 C one
    # unit is 1.5% of c; rounding up would fail the check and drop the sample), and an
    # out-of-range r can never turn into a negative weight.
    c = (c - 2.0 ** -_FIXED_POINT_BITS).relu()
    # Checked against C itself: c targets C' = (1 - 2^-10) C, so an accurate c passes with room.
    # c * (c n / C^2): never c^2, which is below the fixed-point resolution for large norms.
    ok = (c * ((sq_norms / params.max_grad_norm ** 2) * c)) < 1.0
    return c * ok


def clipped_sums(sites: Sequence[TrainableSite], factors: Optional[Any],
                 per_sample: Optional[Mapping[str, ConvPerSample]] = None) -> Dict[str, Any]:
    """Step 4: ``sum_i c_i g_i`` for every parameter, as shares (``factors=None``: c_i = 1).

    Each conv layer takes the cheapest of three equal ways, by the number of values a Beaver
    product opens per sample (the dominant cost): ``sum_i c_i G_i`` on the per-sample gradients
    kept by step 1 (``p c k^2`` values), or one Beaver convolution of ``c_i a_i`` and ``d_i``
    (``2|a| + |d|``: c re-weights the input, since ``c_i (a_i * d_i) = (c_i a_i) * d_i``), or of
    ``a_i`` and ``c_i d_i`` (``|a| + 2|d|``). The bias sums are ``sum_i c_i (sum over positions
    of d_i)`` (``p`` values). Dense layers re-weight their (small) output deltas.
    """
    sums: Dict[str, Any] = {}
    for site in sites:
        if factors is not None and site.layer.kind == "conv":
            sums.update(_clipped_conv_sums(site, factors, (per_sample or {}).get(site.layer.name)))
            continue
        d = site.deltas
        scaled = d if factors is None else d * factors.reshape(-1, *([1] * (d.dim() - 1)))
        if site.layer.kind == "linear" or site.layer.kind == "conv":
            sums.update(site.layer.weight_grads(site.saved, scaled))
        else:
            sums.update(_poly_sums(site, scaled))
    return sums


def _clipped_conv_sums(site: TrainableSite, factors: Any, kept: Optional[ConvPerSample]) -> Dict[str, Any]:
    layer, a, d = site.layer, site.inputs, site.deltas
    b = a.size(0)
    size_a, size_d = a[0].nelement(), d[0].nelement()
    size_g = layer.weight.nelement()
    prefix = layer.param_prefix
    bias = (d.sum(3).sum(2) if kept is None else kept.bias) * factors.reshape(b, 1)
    out = {f"{prefix}.bias": bias.sum(0)}
    if kept is not None and size_g <= min(2 * size_a + size_d, size_a + 2 * size_d):
        p, c, k = layer.weight.size(0), layer.weight.size(1), layer.weight.size(-1)
        w = (kept.weight * factors.reshape(1, b, 1)).sum(1)  # (c, p*k*k)
        out[f"{prefix}.weight"] = w.reshape(c, p, k, k).transpose(0, 1)
        return out
    if size_a <= size_d:
        scaled = _with_input(site.saved, a * factors.reshape(b, *([1] * (a.dim() - 1))))
        out[f"{prefix}.weight"] = layer.weight_grads(scaled, d)[f"{prefix}.weight"]
    else:
        out[f"{prefix}.weight"] = layer.weight_grads(site.saved, d * factors.reshape(b, 1, 1, 1))[f"{prefix}.weight"]
    return out


def _with_input(saved: Any, x: Any) -> Any:
    """The layer's saved record with its input replaced (for re-weighted inputs)."""
    return dataclasses.replace(saved, tensors=(x,) + tuple(saved.tensors[1:]))


def _poly_sums(site: TrainableSite, scaled: Any) -> Dict[str, Any]:
    """Gradients of a and b of ``a x^2 + b x`` from (re-weighted) deltas."""
    x, x2 = site.saved.tensors
    prefix = site.layer.param_prefix
    return {f"{prefix}.a": _batch_sum(scaled * x2).sum().reshape(1),
            f"{prefix}.b": _batch_sum(scaled * x).sum().reshape(1)}


def add_noise_share(share_tensor: Any, *, std: float) -> None:
    """Step 5: add this party's noise to its own share (local; nobody else sees it)."""
    if std == 0.0:
        return
    inner = share_tensor._tensor  # ArithmeticSharedTensor: .share is this party's ring element
    noise = csprng_normal(tuple(inner.share.size()), std=std)
    inner.share += inner.encoder.encode(noise)


def noised_gradient_sums(sites: Sequence[TrainableSite], *, params: DPStepParams) -> DPStepResult:
    """Steps 1-6 for one batch; returns the opened noised sums (and the unopened norms/factors)."""
    kept: Dict[str, ConvPerSample] = {}
    sq_norms = per_sample_sq_norms(sites, keep=kept)
    factors = clip_factors(sq_norms, params=params)
    sums = clipped_sums(sites, factors, kept)
    opened = {}
    for name, share in sums.items():
        add_noise_share(share, std=params.noise_std_per_party)
        opened[name] = share.get_plain_text()
    return DPStepResult(noised_sums=opened, sq_norms=sq_norms, clip_factors=factors)


def open_gradient_sums(sites: Sequence[TrainableSite], *, params: Optional[DPStepParams]) -> Dict[str, torch.Tensor]:
    """The step's released gradient sums: noised (steps 1-6), or with ``params=None`` (``dp=off``,
    non-private runs and benchmarks only) the exact batch sums, opened without clipping or noise."""
    if params is not None:
        return dict(noised_gradient_sums(sites, params=params).noised_sums)
    return {name: share.get_plain_text() for name, share in clipped_sums(sites, None).items()}
