"""Party programs for the conversions (tests and benchmarks run them in real party processes).

:class:`SSToHEProgram`: party ``holder`` secret-shares a (batch, features) tensor, then every
party runs :func:`~ppml_hybrid.protocols.ss_to_he.ss_to_he_party`. The result per party is its
:class:`SSToHEResult`; only with ``reveal=True`` (tests) does it carry the party's raw share of
the clamped value and its carry-bit shares, so the test can check against the exact sum of the
shares.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import numpy as np

from ppml_hybrid.he_stage.keys import PublicMaterial, load_public_material
from ppml_hybrid.protocols.messages import ChainTranscript, PartyContribution
from ppml_hybrid.protocols.params import ConversionParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SSToHEResult:
    contribution: PartyContribution
    transcript: Optional[ChainTranscript] = None
    clamped_share: Optional[np.ndarray] = None  # reveal only
    carry_bits: Optional[Tuple[np.ndarray, ...]] = None  # reveal only
    traffic: Any = None  # this party's MPC traffic during the conversion (Traffic)


@dataclass(frozen=True)
class SSToHEProgram:
    material: PublicMaterial
    params: ConversionParams
    holder: int = 0
    transcript: bool = False
    reveal: bool = False

    def __call__(self, ctx: Any, inputs: Any) -> SSToHEResult:
        from ppml_hybrid.protocols.ss_to_he import ss_to_he_party

        keys = load_public_material(material=self.material)
        x = ctx.share(inputs if ctx.rank == self.holder else None, src=self.holder)
        before = ctx.transport.snapshot()
        contribution, transcript, cs = ss_to_he_party(ctx=ctx, x=x, keys=keys, params=self.params,
                                                      transcript=self.transcript)
        after = ctx.transport.snapshot()
        return SSToHEResult(
            contribution=contribution,
            transcript=transcript,
            clamped_share=cs.clamped_share.numpy() if self.reveal else None,
            carry_bits=tuple(b.numpy() for b in cs.carry_bits) if self.reveal else None,
            traffic=after - before,
        )


@dataclass(frozen=True)
class HEToSSProgram:
    """Each party wraps its HE->SS int64 share (its input) as a CrypTen share.

    Test aid: with ``reveal=True`` the value is opened (``get_plain_text``) and returned; the
    pipeline never opens it.
    """

    reveal: bool = False

    def __call__(self, ctx: Any, inputs: Any) -> Any:
        from ppml_hybrid.protocols.he_to_ss import share_to_mpc

        x = share_to_mpc(crypten=ctx.crypten, share=inputs)
        y = x * 2.0 + 1.0  # the tensor is usable in further MPC arithmetic
        if not self.reveal:
            return None
        return x.get_plain_text().double().numpy(), y.get_plain_text().double().numpy()


@dataclass(frozen=True)
class OpenEnclaveNoise:
    """Every party fetches its share of K's noise for ``steps`` steps of one sum of ``count``
    values (``dp.noise_source: enclave``) and the parties open it through the DP step's own
    noise-only path (:func:`~ppml_hybrid.protocols.dp_step.noise_only_sums`). Returns, per step,
    the opened noise in lattice units (scale 2^32) as int64 (the DP audit's real path)."""

    key_address: str
    key_trust_pem: bytes
    credentials: Tuple[Any, ...]  # one per party (each party's own)
    noise_multiplier: float
    max_grad_norm: float
    count: int
    steps: int = 1
    first_step: int = 0  # K draws each step id once: later runs against the same K go on from here

    def __call__(self, ctx: Any, inputs: Any) -> list:
        import torch

        from ppml_hybrid.protocols.dp_noise import EnclaveNoise
        from ppml_hybrid.protocols.dp_step import DPStepParams, noise_only_sums

        torch.set_num_threads(1)
        params = DPStepParams(max_grad_norm=self.max_grad_norm, noise_multiplier=self.noise_multiplier,
                              parties=ctx.parties, noise_source="enclave")
        from ppml_hybrid.rpc.noise_client import NoiseClient

        client = NoiseClient(address=self.key_address, server_trust_pem=self.key_trust_pem,
                                credential=self.credentials[ctx.rank])
        out = []
        try:
            for step in range(self.first_step, self.first_step + self.steps):
                noise = EnclaveNoise(key_client=client, step=step, noise_multiplier=self.noise_multiplier,
                                     max_grad_norm=self.max_grad_norm)
                opened = noise_only_sums({"audit.noise": (self.count,)}, params=params, crypten=ctx.crypten,
                                         noise=noise)["audit.noise"]
                out.append(np.round(opened.double().numpy() * 2.0 ** 32).astype(np.int64))
        finally:
            client.close()
        return out
