"""A party's access to K inside its MPC session: its own credential, the K it verified, and
its channel for K's DP noise (``dp.noise_source: enclave``).

Nothing here trusts what a step names: a step that points at a K (address, pinned
certificate) this party did not verify in this session is refused before anything is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ppml_hybrid.protocols.dp_noise import EnclaveNoise
from ppml_hybrid.protocols.dp_step import DPStepParams
from ppml_hybrid.protocols.errors import KeyServiceNotVerifiedError
from ppml_hybrid.rpc.noise_client import NoiseClient
from ppml_hybrid.rpc.tls import Credential

VERIFIED_KEY_SERVICE = "verified_key_service"  # ctx.session entry: (K's address, trust pem, material digest)
_NOISE_CLIENT = "noise_key_client"


@dataclass(frozen=True)
class KeyEndpoint:
    """Where K listens and the certificate to pin (public)."""

    address: str
    trust_pem: bytes


def own_credential(ctx: Any, inputs: Any) -> Credential:
    """This party's client credential for K and E: its own key (never one made by someone else)."""
    given = getattr(inputs, "credential", None)
    if given is not None:
        return given
    identity = getattr(ctx, "identity", None)
    if identity is None:
        raise KeyServiceNotVerifiedError(f"party {ctx.rank} has no key of its own to call K and E with")
    return Credential(cert_pem=identity.cert_pem, key_pem=identity.key_pem)


def require_verified(ctx: Any, key: KeyEndpoint) -> None:
    verified = ctx.session.get(VERIFIED_KEY_SERVICE)
    if verified is None or verified[:2] != (key.address, key.trust_pem):
        raise KeyServiceNotVerifiedError(
            f"party {ctx.rank}: the step names a key service this party has not verified (run VerifyKeyService "
            "first in this session); refusing to use it")


def step_noise(ctx: Any, inputs: Any, *, dp: Optional[DPStepParams], key: Optional[KeyEndpoint],
               step: int) -> Optional[EnclaveNoise]:
    """This party's share of K's noise for ``step`` (``enclave``), or None (``parties``, or dp=off)."""
    if dp is None or dp.noise_source != "enclave" or dp.noise_multiplier == 0.0:
        return None  # (sigma 0: tests comparing with the plaintext twin; nothing to draw)
    if key is None:
        raise KeyServiceNotVerifiedError("dp.noise_source=enclave: the step names no key service to draw the noise")
    require_verified(ctx, key)
    cred = own_credential(ctx, inputs)
    cached = ctx.session.get(_NOISE_CLIENT)
    if cached is None or cached[0] != (key, cred):
        if cached is not None:
            cached[1].close()
        cached = ((key, cred), NoiseClient(address=key.address, server_trust_pem=key.trust_pem, credential=cred))
        ctx.session[_NOISE_CLIENT] = cached
    return EnclaveNoise(key_client=cached[1], step=step, noise_multiplier=dp.noise_multiplier,
                        max_grad_norm=dp.max_grad_norm)
