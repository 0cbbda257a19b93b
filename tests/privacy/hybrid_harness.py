"""The privacy suite's harness: real hybrid DP steps with every role's view recorded, and plants.

K and E run in the test process (the real servicers over real gRPC + mTLS, with wire logs), so
that the test can record what K decrypts (its raw doubles, before they are shared) and the
masks E draws, and can plant leaks in them. The parties are real processes; the party program
:class:`RecordingHybridSteps` runs one full hybrid DP step per secret batch of party 0 and
records, in each party's own process:

* ``opened`` (observer only): every value it learns from its peers' MPC messages (openings,
  received tensors), up to but excluding the opening of the noised sums (the DP release);
* ``k_shares`` / ``e_shares``: the HE->SS shares it fetched from K and E per round;
* ``noise``: the noise it added to its own share of each sum (so the auditor can check it);
* ``value_bits``: the bounds it announced.

A plant is a named change of the real code, made where that code runs: in the test process for
K and E (:data:`SERVICE_PLANTS`, via monkeypatch) and inside every party process for the party
side (:data:`PARTY_PLANTS`, installed by the program before its step).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from ppml_hybrid.protocols.hybrid_train_step import HybridPartyInputs, HybridTrainStep
from ppml_hybrid.smpc_stage.transport import ViewRecorder

# ------------------------------------------------------------------ services in this process


@dataclass
class InProcessServices:
    """K and E served from the test process (same API as roles.local_services.LocalHEServices)."""

    pki: Any
    key_service: Any
    evaluator: Any
    parties: int
    key_registry: Any = None

    def credential(self, name: str) -> Any:
        return self.pki.clients[name]

    def party_key_client(self, j: int, **kw: Any) -> Any:
        from ppml_hybrid.he_stage.keyservice_client import PartyKeyClient
        from ppml_hybrid.roles.local_services import party_name

        return PartyKeyClient(address=self.key_service.address, server_trust_pem=self.key_service.trust_pem,
                              credential=self.credential(party_name(j)), **kw)

    def stop(self) -> None:
        self.evaluator.stop()
        self.key_service.stop()


def start_services(*, run: Any, keyservice: Any, e_log: str, k_log: str) -> InProcessServices:
    from ppml_hybrid.he_stage.evaluator.main import start_evaluator
    from ppml_hybrid.he_stage.evaluator.spec import EvaluatorSpec
    from ppml_hybrid.keyservice.main import start_key_service
    from ppml_hybrid.keyservice.spec import KeyServiceSpec
    from ppml_hybrid.roles.local_services import evaluator_registry, key_service_registry, make_local_pki
    from ppml_hybrid.rpc.tls import EVALUATOR

    pki = make_local_pki(parties=run.parties)
    registry = key_service_registry(pki=pki, parties=run.parties)
    k = start_key_service(spec=KeyServiceSpec(run=run, keyservice=keyservice, client_ca_pem=pki.ca.cert_pem,
                                              registry=registry, wire_log=k_log))
    e = start_evaluator(EvaluatorSpec(
        run=run, key_address=k.address, key_trust_pem=k.trust_pem, key_credential=pki.clients[EVALUATOR],
        client_ca_pem=pki.ca.cert_pem, registry=evaluator_registry(pki=pki, parties=run.parties),
        share_wait_s=keyservice.share_wait_s, max_mask_rounds=keyservice.max_open_rounds, wire_log=e_log,
        keyservice=keyservice, development_root_pem=k.attestation_root_pem or b"", key_registry=registry,
        accept_development_attestation=True))
    return InProcessServices(pki=pki, key_service=k, evaluator=e, parties=run.parties, key_registry=registry)


@dataclass
class ServiceViews:
    """What K decrypted (raw doubles, per round) and the masks E drew (per round), in this process."""

    k_plain: List[Tuple[Any, np.ndarray]] = field(default_factory=list)
    e_masks: List[np.ndarray] = field(default_factory=list)

    def install(self, mp: Any) -> None:
        from ppml_hybrid.he_stage.evaluator import masking
        from ppml_hybrid.keyservice import hazmat

        encode = hazmat.encode_fixed_point_mod

        def k_encode(*, values: np.ndarray) -> np.ndarray:  # K's view: the decoded doubles
            self.k_plain.append(np.array(values))
            return encode(values=values)

        draw = masking.real_mask

        def e_mask(*, bits: int, shape: tuple) -> np.ndarray:  # looked up at call time: plants wrap it too
            r = draw(bits=bits, shape=shape)
            self.e_masks.append(np.array(r))
            return r

        mp.setattr(hazmat, "encode_fixed_point_mod", k_encode)
        mp.setattr(masking, "real_mask", e_mask)


# ------------------------------------------------------------------ plants in K and E (this process)


def _plant_mask_reused(mp: Any) -> None:
    from ppml_hybrid.he_stage.evaluator import masking

    cache: Dict[tuple, np.ndarray] = {}
    draw = masking.real_mask

    def reused(*, bits: int, shape: tuple) -> np.ndarray:
        key = (bits, shape)
        if key not in cache:
            cache[key] = draw(bits=bits, shape=shape)
        return cache[key]

    mp.setattr(masking, "real_mask", reused)


def _plant_mask_on_grid(mp: Any) -> None:
    from ppml_hybrid.he_stage.evaluator import masking

    draw = masking.real_mask

    def grid(*, bits: int, shape: tuple) -> np.ndarray:
        return np.round(draw(bits=bits, shape=shape) * 2 ** 16) / 2 ** 16  # multiples of 2^-16

    mp.setattr(masking, "real_mask", grid)


def _plant_value_beyond_mask_bound(mp: Any) -> None:
    """E masks with 2^(V+H-12): K then holds values far beyond what its mask hides (2^-H per slot)."""
    from ppml_hybrid.he_stage.evaluator import server

    mask = server.mask_tensor

    def narrow(*, mask_bits: int, **kw: Any) -> Any:
        return mask(mask_bits=mask_bits - 12, **kw)

    mp.setattr(server, "mask_tensor", narrow)


SERVICE_PLANTS: Dict[str, Callable[[Any], None]] = {
    "mask_reused_across_steps": _plant_mask_reused,
    "mask_on_coarse_grid": _plant_mask_on_grid,
    "k_gets_values_beyond_the_mask_bound": _plant_value_beyond_mask_bound,
}

# ------------------------------------------------------------------ plants in the parties


def _install_party_plant(name: str, ctx: Any) -> None:
    """Change this party process's protocol code (the planted leak)."""
    from ppml_hybrid.protocols import dp_noise, dp_step

    if name == "unnoised_sums_opened":
        add = dp_step.add_noise_shares

        def open_then_noise(raws: Any, scale_bits: Any, **kwargs: Any) -> Any:
            for raw in raws.values():
                ctx.crypten.mpc.MPCTensor.from_shares(raw, precision=0).reveal()  # the clipped sum, un-noised
            return add(raws, scale_bits, **kwargs)

        dp_step.add_noise_shares = open_then_noise
    elif name == "clip_factors_opened":
        checked = dp_step.checked_factors

        def open_factors(*args: Any, **kwargs: Any) -> Any:
            f = checked(*args, **kwargs)
            ctx.crypten.mpc.MPCTensor.from_shares(f, precision=16).reveal()
            return f

        dp_step.checked_factors = open_factors
    elif name == "noise_from_seeded_prng":
        def seeded(shape: tuple, *, std: float) -> torch.Tensor:
            g = torch.Generator().manual_seed(1234)  # a public seed: every party draws the same "noise"
            return torch.randn(shape, generator=g, dtype=torch.float64) * std

        dp_noise.csprng_normal = seeded
    elif name is not None:
        raise ValueError(f"unknown party plant {name!r}")


PARTY_PLANTS = ("unnoised_sums_opened", "clip_factors_opened", "noise_from_seeded_prng")


@dataclass(frozen=True)
class RecordingInputs:
    credential: Any
    batches: Tuple[Tuple[str, Any], ...]  # (label, PartyRows) in run order


@dataclass(frozen=True)
class RecordingHybridSteps:
    step: HybridTrainStep  # step_id / first_round of the first batch; later batches follow on
    observer: int = 1
    plant: Optional[str] = None

    def __call__(self, ctx: Any, inputs: RecordingInputs) -> Dict[str, Any]:
        from ppml_hybrid.protocols import dp_noise, dp_step
        from ppml_hybrid.protocols.conversion_client import PartyConversionClient

        # every plant and recorder is undone after the run: the session's next program sees clean code
        saved = [(dp_step, n, getattr(dp_step, n)) for n in ("add_noise_shares", "checked_factors")]
        saved.append((dp_noise, "csprng_normal", dp_noise.csprng_normal))
        saved += [(HybridTrainStep, "value_bits", HybridTrainStep.value_bits),
                  (PartyConversionClient, "receive", PartyConversionClient.receive)]
        try:
            return self._run(ctx, inputs)
        finally:
            for owner, name, value in saved:
                setattr(owner, name, value)

    def _run(self, ctx: Any, inputs: RecordingInputs) -> Dict[str, Any]:
        from ppml_hybrid.he_stage.shares import sum_shares
        from ppml_hybrid.protocols import dp_step
        from ppml_hybrid.protocols.conversion_client import PartyConversionClient

        torch.set_num_threads(1)
        fetched: List[Tuple[int, str, np.ndarray, np.ndarray]] = []
        noise: List[np.ndarray] = []

        def receive(client: Any, *, round: Any) -> np.ndarray:  # PartyConversionClient.receive, recorded
            from_k = client._key.fetch_share(round_id=round.round_id)
            from_e = client._evaluator.fetch_mask_share(round_id=round.round_id)
            fetched.append((round.round_id, round.kind, np.array(from_k.share), np.array(from_e.share)))
            return sum_shares(from_k.share, from_e.share)

        PartyConversionClient.receive = receive  # this party process only
        _install_party_plant(self.plant, ctx)
        add = dp_step.add_noise_shares

        def recorded_noise(raws: Any, scale_bits: Any, **kwargs: Any) -> Any:
            out = add(raws, scale_bits, **kwargs)
            ctx.transport.recorder = None  # what follows is the opening of the noised sums (the DP release)
            for name, raw in raws.items():
                noise.append(((out[name] - raw).double() / 2.0 ** scale_bits[name]).numpy())
            return out

        dp_step.add_noise_shares = recorded_noise
        out: Dict[str, Any] = {}
        per_step = self.step.rounds_per_step()
        for i, (label, rows) in enumerate(inputs.batches):
            fields = {f.name: getattr(self.step, f.name) for f in dataclasses.fields(self.step)}
            fields.update(step_id=self.step.step_id + i, first_round=self.step.first_round + i * per_step)
            program = HybridTrainStep(**fields)
            fetched.clear()
            noise.clear()
            recorder = ViewRecorder()
            if ctx.rank == self.observer:
                ctx.transport.recorder = recorder
            bits = program.value_bits()
            result = program(ctx, HybridPartyInputs(rows=rows, credential=inputs.credential))
            ctx.transport.recorder = None
            out[label] = {
                "opened": recorder.take() if ctx.rank == self.observer else None,
                "k_shares": [(r, k, s) for r, k, s, _ in fetched],
                "e_shares": [(r, k, s) for r, k, _, s in fetched],
                "noise": np.concatenate([n.reshape(-1) for n in noise]) if noise else np.zeros(0),
                "value_bits": bits,
                "noised_sums": dict(result.noised_sums),
                "batch_size": result.batch_size,
            }
        return out
