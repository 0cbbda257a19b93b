"""Where a DP step's noise comes from (``dp.noise_source``), as this party's additive share.

* :class:`OwnNoise` (``parties``): the party draws ``N(0, sigma^2 C^2 / (n-1))`` from its own
  ``os.urandom``, rounded at each sum's scale; with one corrupted party the honest parties'
  noise alone has variance ``sigma^2 C^2`` (what the accountant credits), and the released
  noise is ``sqrt(n / (n-1))`` times that.
* :class:`EnclaveNoise` (``enclave``): the party fetches its share of the one discrete Gaussian
  draw K makes for this step (``keyservice/noise.py``) over its own channel to K. Each share is
  uniform; only their sum, added inside the MPC before the opening, is noise.

Either way the result maps each released sum's name to an int64 tensor (scale ``2^b`` of that
sum) the party adds to its own share of the clipped sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Protocol, Sequence

import numpy as np
import torch

from ppml_hybrid.privacy.csprng import csprng_normal
from ppml_hybrid.rpc.messages import NoiseRequest, NoiseSlot


class NoiseShares(Protocol):
    def __call__(self, slots: Sequence[NoiseSlot]) -> Dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class OwnNoise:
    """``dp.noise_source: parties``: this party's own rounded Gaussian noise, std ``std`` per value."""

    std: float

    def __call__(self, slots: Sequence[NoiseSlot]) -> Dict[str, torch.Tensor]:
        out = {}
        for s in slots:
            if self.std == 0.0:
                out[s.name] = torch.zeros(s.count, dtype=torch.long)
            else:
                out[s.name] = torch.round(csprng_normal((s.count,), std=self.std) * 2.0 ** s.scale_bits).long()
        return out


@dataclass(frozen=True)
class EnclaveNoise:
    """``dp.noise_source: enclave``: this party's share of K's noise for step ``step``."""

    key_client: Any  # rpc.noise_client.NoiseClient over this party's own mTLS channel to K
    step: int
    noise_multiplier: float
    max_grad_norm: float

    def __call__(self, slots: Sequence[NoiseSlot]) -> Dict[str, torch.Tensor]:
        request = NoiseRequest(step=self.step, slots=tuple(slots), noise_multiplier=float(self.noise_multiplier),
                               max_grad_norm=float(self.max_grad_norm))
        share = self.key_client.fetch_noise(request=request)
        out, start = {}, 0
        for s in slots:
            out[s.name] = torch.from_numpy(np.ascontiguousarray(share[start:start + s.count]))
            start += s.count
        return out
