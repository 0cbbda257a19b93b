"""Party program of the DP-step tests: MPC forward/backward of a small model, then the DP step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from ppml_hybrid.config import ModelConfig
from ppml_hybrid.protocols.dp_step import DPStepParams, noised_gradient_sums, trainable_sites
from ppml_hybrid.smpc_stage.stage import MPCBlocks


@dataclass(frozen=True)
class DPProgram:
    model: ModelConfig
    state_dict: Mapping[str, torch.Tensor]
    image_size: int
    max_grad_norm: float
    noise_multipliers: tuple
    # dp.noise_source=enclave: K's address, its pinned certificate, and each party's credential
    enclave: Optional[Tuple[str, bytes, tuple]] = None

    def _noise(self, ctx: Any, step: int) -> Any:
        if self.enclave is None:
            return None
        from ppml_hybrid.rpc.noise_client import NoiseClient
        from ppml_hybrid.protocols.dp_noise import EnclaveNoise

        address, trust, creds = self.enclave
        client = NoiseClient(address=address, server_trust_pem=trust, credential=creds[ctx.rank])
        return EnclaveNoise(key_client=client, step=step, noise_multiplier=self.noise_multipliers[step],
                            max_grad_norm=self.max_grad_norm)

    def __call__(self, ctx: Any, inputs: Any) -> Dict[str, Any]:
        torch.set_num_threads(1)
        crypten = ctx.crypten
        rows, delta = inputs if inputs is not None else (None, None)
        x = ctx.share(rows, src=0)
        d = ctx.share(delta, src=0)
        stage = MPCBlocks.build(model=self.model, state_dict=self.state_dict, image_size=self.image_size,
                                stop=len(self.model.blocks))
        trace = stage.forward(x, crypten=crypten)
        back = stage.backward(trace, d, crypten=crypten)
        sites = trainable_sites(stage.layers, trace, back)
        out: Dict[str, Any] = {}
        for step, sigma in enumerate(self.noise_multipliers):
            params = DPStepParams(max_grad_norm=self.max_grad_norm, noise_multiplier=sigma, parties=ctx.parties,
                                  noise_source="enclave" if self.enclave else "parties")
            noise = self._noise(ctx, step) if sigma > 0 else None
            result = noised_gradient_sums(sites, params=params, crypten=crypten, noise=noise)
            # Opened here for the test only: the protocol never opens norms or clip factors.
            out[sigma] = {
                "sums": {k: v.tolist() for k, v in result.noised_sums.items()},
                "sq_norms": result.sq_norms.get_plain_text().tolist(),
                "clip": result.clip_factors.get_plain_text().tolist(),
            }
        return out


@dataclass(frozen=True)
class ClipFactorProgram:
    """Opens the clip factors of given per-sample squared norms (test only)."""

    sq_norms: tuple
    max_grad_norm: float

    def __call__(self, ctx: Any, inputs: Any) -> list:
        from ppml_hybrid.protocols.dp_step import clip_factors

        torch.set_num_threads(1)
        n = ctx.crypten.cryptensor(torch.tensor(self.sq_norms) if ctx.rank == 0 else torch.zeros(len(self.sq_norms)),
                                   src=0)
        params = DPStepParams(max_grad_norm=self.max_grad_norm, noise_multiplier=1.0, parties=ctx.parties)
        return clip_factors(n, params=params, crypten=ctx.crypten).get_plain_text().tolist()


@dataclass(frozen=True)
class GarbageProgram:
    """The DP step (noise 0) on clean shares, then again after party 0 adds ``2^48`` to one raw
    share of sample 0 at each ``(site, what)`` (what a failed two-party truncation leaves:
    ~2^32 in value). Returns both opened sums per corruption (test only)."""

    model: ModelConfig
    state_dict: Mapping[str, torch.Tensor]
    image_size: int
    max_grad_norm: float
    corruptions: tuple  # ((site index, "inputs" | "deltas"), ...)

    def __call__(self, ctx: Any, inputs: Any) -> Dict[str, Any]:
        torch.set_num_threads(1)
        crypten = ctx.crypten
        rows, delta = inputs if inputs is not None else (None, None)
        x, d = ctx.share(rows, src=0), ctx.share(delta, src=0)
        stage = MPCBlocks.build(model=self.model, state_dict=self.state_dict, image_size=self.image_size,
                                stop=len(self.model.blocks))
        trace = stage.forward(x, crypten=crypten)
        back = stage.backward(trace, d, crypten=crypten)
        params = DPStepParams(max_grad_norm=self.max_grad_norm, noise_multiplier=0.0, parties=ctx.parties)

        def sums():
            sites = trainable_sites(stage.layers, trace, back)
            return {k: v.tolist() for k, v in noised_gradient_sums(sites, params=params, crypten=crypten)
                    .noised_sums.items()}

        out = {"clean": sums()}
        for index, what in self.corruptions:
            site = trainable_sites(stage.layers, trace, back)[index]
            share = getattr(site, what).share
            saved = share.clone()
            if ctx.rank == 0:
                share.view(share.size(0), -1)[0, 0] += 2 ** 48
            out[f"{index}.{what}"] = sums()
            share.copy_(saved)
        return out
