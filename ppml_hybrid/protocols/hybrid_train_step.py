"""One hybrid DP training step (blocks 1..s under MPC, s+1..L under CKKS at E), run by each party.

Steps (design section 5):

1. each party Poisson-samples its own rows (``os.urandom``), pads them with a noisy number of
   dummy rows (secret weight 0, :mod:`ppml_hybrid.privacy.batch_count`) and secret-shares
   images, one-hot labels and row weights; only the padded row counts are public;
2. MPC forward through blocks 1..s (public weights); each sample's split activations are
   clipped to L2 norm ``he.split_norm_bound`` exactly (:mod:`exact_clip`), which bounds every
   value E computes (:mod:`value_bounds`: the public bound V of each tensor sets its HE->SS
   mask width 2^(V+H));
3. SS->HE of the split activations (:mod:`ss_to_he`): every party sends its ``Enc(u_j/2^f)``
   to the last party, which also ends the XOR chain, combines (public material only) and, as
   this step's driver, hands ``Enc(a)`` to E with the HE blocks' public weights;
4. E runs blocks s+1..L forward and keeps every hidden tensor;
5. HE->SS of the logits: all parties announce the round (with its bound V) to K, the driver
   asks E to mask, each party receives its shares from K and E (:mod:`he_to_ss`), straight
   into the MPC;
6. ``delta_z = softmax(z) - y`` in MPC; 7. SS->HE of ``delta_z`` (clamped to
   ``|delta_z| < 2^he.delta_clamp_bits``); E runs backward; HE->SS of
   ``delta_a`` and of the hidden HE tensors the DP step needs (inputs and output deltas of
   every HE linear map, pre-activations and output deltas of every trainable polynomial);
8. MPC backward through blocks s..1 from ``delta_a``;
9-10. the DP step (:mod:`dp_step`) over MPC and HE layers alike; the noised sums are opened
   (``dp=None``, i.e. ``dp=off``: the exact sums; non-private reference runs only).

In a :class:`~ppml_hybrid.smpc_stage.launcher.PartySession` each party deserializes the
public material and opens its mTLS channels to K and E once (``ctx.session``), not per step.

Service traffic (payload bytes and one round per RPC to K or E) is added to each party's
transport counters (``Traffic.services``), so projections charge the ciphertexts and shares
exchanged with the services as well as the MPC's own traffic.

Who learns what: parties see their own rows, the padded (noised) row counts, uniformly random
shares, ciphertexts they cannot decrypt, and the noised sums; E sees ciphertexts, its masks, the
public weights and the padded batch size; K sees masked values only (and the padded batch size).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from ppml_hybrid.config import ModelConfig
from ppml_hybrid.he_stage.keys import PublicMaterial, encryption_only, load_public_material, serialize_ciphertext
from ppml_hybrid.model.spec import block_shapes
from ppml_hybrid.privacy.batch_count import CountNoise
from ppml_hybrid.protocols.dp_step import DPStepParams, TrainableSite, open_gradient_sums, trainable_sites
from ppml_hybrid.protocols.dp_step import noise_only_sums
from ppml_hybrid.protocols.errors import BatchCapacityError, KeyServiceNotVerifiedError, MaskWidthError
from ppml_hybrid.protocols.exact_clip import clip_rows, clipped_row_norm_bound
from ppml_hybrid.protocols.he_to_ss import share_to_mpc
from ppml_hybrid.protocols.key_access import VERIFIED_KEY_SERVICE, KeyEndpoint, own_credential, step_noise
from ppml_hybrid.protocols.messages import EncryptedShare
from ppml_hybrid.protocols.step_common import PartyRows, StageClock, StepOutput, share_own_sample, trainable_shapes
from ppml_hybrid.protocols.params import ConversionParams
from ppml_hybrid.protocols.ss_to_he import combine, ss_to_he_party
from ppml_hybrid.protocols.value_bounds import he_value_bounds, value_bits_for
from ppml_hybrid.rpc.messages import RoundRef
from ppml_hybrid.rpc.tls import Credential, Registry
from ppml_hybrid.smpc_stage import layers as L
from ppml_hybrid.smpc_stage.stage import MPCBlocks


@dataclass(frozen=True)
class ServiceEndpoints:
    """Where K and E listen and the certificates to trust (public)."""

    key_address: str
    key_trust_pem: bytes
    evaluator_address: str
    evaluator_trust_pem: bytes


@dataclass(frozen=True)
class HybridPartyInputs:
    """What one party process gets: its own rows. ``credential`` None (the product): the party
    calls K and E with its own key, the one it made for its MPC links (``ctx.identity``); tests
    that run K and E with a local client CA pass one explicitly."""

    rows: PartyRows
    credential: Optional[Credential] = None


@dataclass(frozen=True)
class VerifyKeyService:
    """Party program, once per session before any hybrid step: this party checks K's attestation.

    Steps, in each party process over its own mutually authenticated channel to K: (1) fetch K's
    public material; (2) attest K with a fresh nonce from this process's CSPRNG, verifying code
    identity, the material's hash, the decryption policy and the pinned TLS channel
    (:func:`~ppml_hybrid.rpc.keyservice_verify.attest_key_service`); (3) remember the verified
    material's digest in ``ctx.session``: every later step refuses a public key other than the
    one this party verified (a coordinator that swapped in its own key could decrypt what the
    parties encrypt). Returns (digest of the encryption part, development document?, that
    encryption part from party 0 only: context and public key, no evaluation keys). Who learns what: the caller learns K's public material.
    """

    endpoints: ServiceEndpoints
    keyservice: Any  # KeyServiceConfig
    registry: Registry  # whom K should decrypt for: checked here, then bound by K's attestation
    development_root_pem: Optional[bytes] = None
    # the launching host's own choice (never a shared config key): the one-machine launcher sets
    # it for the K it started itself on loopback
    accept_development: bool = False
    # return the verified encryption material at every party (the role process keeps it), not
    # only at party 0 (the local orchestrator collects it once)
    return_material: bool = False

    def __call__(self, ctx: Any, inputs: Any) -> Tuple[str, bool, Optional[PublicMaterial]]:
        from ppml_hybrid.he_stage.keyservice_client import PartyKeyClient
        from ppml_hybrid.rpc.keyservice_verify import attest_key_service

        ep = self.endpoints
        credential = own_credential(ctx, inputs)
        self._check_registry(ctx, credential)
        client = PartyKeyClient(address=ep.key_address, server_trust_pem=ep.key_trust_pem, credential=credential)
        try:
            published = client.get_public_material()
            payload = attest_key_service(client=client, published=published, keyservice=self.keyservice,
                                         development_root_pem=self.development_root_pem,
                                         tls_trust_pem=ep.key_trust_pem, registry=self.registry,
                                         accept_development=self.accept_development)
        finally:
            client.close()
        digest = encryption_only(published.material).digest()
        ctx.session[VERIFIED_KEY_SERVICE] = (ep.key_address, ep.key_trust_pem, digest)
        return digest, bool(payload.development), (encryption_only(published.material)
                                                if ctx.rank == 0 or self.return_material else None)

    def _check_registry(self, ctx: Any, credential: Credential) -> None:
        """Whom K will decrypt for must be exactly the parties this party authenticated: its own
        certificate as itself and (its credential being its MPC link key) every other party's
        pinned link certificate as that party; nobody registered twice or out of range."""
        from ppml_hybrid.rpc.tls import PARTY, RegistryError, Role, fingerprint

        self.registry.validate(parties=ctx.parties)
        parties = {r.party: fp for fp, r in self.registry.roles.items() if r.kind == PARTY}
        if self.registry.roles.get(fingerprint(credential.cert_pem)) != Role(kind=PARTY, party=ctx.rank + 1):
            raise RegistryError(f"party {ctx.rank}: K's role registry does not register this party's own "
                                "certificate as itself")
        identity = getattr(ctx, "identity", None)
        if identity is None or identity.cert_pem != credential.cert_pem:
            return  # a test credential apart from the MPC links: only its own entry can be checked
        comm = ctx.crypten.communicator.get()
        for member in comm.mesh.roster.members[: ctx.parties]:
            if parties.get(member.rank + 1) != member.fingerprint:
                raise RegistryError(f"party {ctx.rank}: K's role registry names a certificate for party "
                                    f"{member.rank + 1} other than the one pinned for {member.name}: refusing K")


@dataclass(frozen=True)
class HybridTrainStep:
    """Party program of one hybrid DP step (module doc)."""

    model: ModelConfig
    state_dict: Mapping[str, torch.Tensor]
    image_size: int
    split_layer: int
    sample_rate: float
    batch_capacity: int
    dp: Optional[DPStepParams]  # None: dp=off
    material: PublicMaterial
    conversion: ConversionParams
    endpoints: ServiceEndpoints
    step_id: int
    first_round: int
    hiding_bits: int  # H: the run's statistical hiding bits per masked slot (K's attested policy)
    max_mask_bits: int
    split_norm_bound: float
    delta_conversion: ConversionParams  # SS->HE of delta_z, with its own (tighter) clamp
    count_noise: Optional[CountNoise] = None  # pads each party's batch (dp on); None with dp=off

    def rounds_per_step(self) -> int:
        return len(self._he_tensors()) + 1  # + the logits

    def _he_tensors(self) -> List[str]:
        return he_tensor_names(self.model, self.split_layer)

    def value_bits(self) -> Dict[str, int]:
        """The public bound V (|v| < 2^V) of every tensor HE->SS returns this step, from the weights.

        Raises :class:`MaskWidthError` before anything is announced if a mask 2^(V+H) would exceed
        ``he.max_mask_bits``.
        """
        shapes = block_shapes(self.model, self.image_size)
        width = int(torch.tensor(shapes[self.split_layer - 1].out_shape).prod())
        norm = clipped_row_norm_bound(bound=self.split_norm_bound, width=width, parties=self.conversion.parties)
        bounds = he_value_bounds(model=self.model, state_dict=self.state_dict, split_layer=self.split_layer,
                                 image_size=self.image_size, input_elem_bound=min(self.conversion.clamp_bound, norm),
                                 input_norm_bound=norm, delta_bound=self.delta_conversion.clamp_bound)
        out = {}
        for name in ["logits"] + self._he_tensors():
            v = value_bits_for(bounds.bounds[name])
            if v + self.hiding_bits > self.max_mask_bits:
                raise MaskWidthError(
                    f"the public bound on |{name}| from the current weights is 2^{v}: with {self.hiding_bits} bits "
                    f"of hiding its HE->SS mask would need 2^{v + self.hiding_bits}, above he.max_mask_bits="
                    f"{self.max_mask_bits}. Lower he.split_norm_bound (now {self.split_norm_bound}) or the "
                    "learning rate (weights that large also mean a diverging run)"
                )
            out[name] = v
        return out

    def __call__(self, ctx: Any, inputs: HybridPartyInputs) -> StepOutput:
        torch.set_num_threads(1)
        crypten = ctx.crypten
        start, before = time.perf_counter(), ctx.transport.snapshot()
        clock = StageClock(ctx.transport)
        value_bits = self.value_bits()
        keys, conv_client, driver = self._session_objects(ctx, inputs)
        is_driver = driver is not None
        clock.lap("load_public_material")

        # 1. sample and share
        shared = share_own_sample(ctx, inputs.rows, sample_rate=self.sample_rate,
                                  num_classes=self.model.num_classes, count_noise=self.count_noise)
        x, y, batch = shared.x, shared.y, shared.size
        if batch > self.batch_capacity:
            raise BatchCapacityError(f"a batch of {batch} rows exceeds the HE layout's capacity {self.batch_capacity} "
                                     "(fixed for the run far above the expected batch); the step cannot run")
        if batch == 0:  # an empty Poisson batch still releases a (noise-only) step, as the accountant assumes
            sums = noise_only_sums(trainable_shapes(self.model, self.state_dict), params=self.dp, crypten=crypten,
                                   noise=self._noise(ctx, inputs))
            clock.lap("dp_step")
            return StepOutput(noised_sums=sums, batch_size=0, seconds=time.perf_counter() - start,
                              traffic=ctx.transport.snapshot() - before, stages=clock.stages())
        clock.lap("share_inputs")

        # 2. MPC forward
        stage = MPCBlocks.build(model=self.model, state_dict=self.state_dict, image_size=self.image_size,
                                stop=self.split_layer)
        trace = stage.forward(x, crypten=crypten, transport=ctx.transport)
        a = clip_rows(trace.output.reshape(batch, -1), bound=self.split_norm_bound,
                      elem_bits=self.conversion.integer_bits, crypten=crypten)
        clock.lap("mpc_forward")

        # 3-4. SS->HE of a (already bounded exactly: no clamp), E forward
        enc_a = self._to_he(ctx, a, keys, params=self.conversion, bounded=True)
        clock.lap("ss_to_he")
        he_state = {k: v for k, v in self.state_dict.items() if int(k.split(".")[1]) >= self.split_layer}
        if is_driver:
            driver.forward(step_id=self.step_id, batch=batch, weights=he_state, inputs=enc_a,
                           n_features=int(a.size(1)))
            ctx.transport.record_service_call(
                sent=sum(map(len, enc_a)) + sum(v.nelement() * v.element_size() for v in he_state.values()),
                received=0)
        clock.lap("he_forward")
        round_id = self.first_round

        # 5-6. logits back into the MPC, delta_z
        z = self._from_he(ctx, conv_client, driver, "logits", round_id, (batch, self.model.num_classes),
                          value_bits["logits"])
        round_id += 1
        clock.lap("he_to_ss")
        delta_z = z.softmax(1) - y
        clock.lap("mpc_softmax")

        # 7. SS->HE of delta_z, E backward, HE tensors back into the MPC
        enc_dz = self._to_he(ctx, delta_z, keys, params=self.delta_conversion)
        clock.lap("ss_to_he")
        if is_driver:
            driver.backward(step_id=self.step_id, delta_logits=enc_dz, n_features=self.model.num_classes)
            ctx.transport.record_service_call(sent=sum(map(len, enc_dz)), received=0)
        clock.lap("he_backward")
        shapes = block_shapes(self.model, self.image_size)
        he: Dict[str, Any] = {}
        for name in self._he_tensors():
            he[name] = self._from_he(ctx, conv_client, driver, name, round_id, (batch, self._features(name, shapes)),
                                     value_bits[name])
            round_id += 1
        if is_driver:
            driver.release_step(step_id=self.step_id)
            ctx.transport.record_service_call(sent=0, received=0)
        clock.lap("he_to_ss")

        # 8. MPC backward from delta_a
        delta_a = he["delta_input"].reshape(*trace.output.size())
        back = stage.backward(trace, delta_a, crypten=crypten, transport=ctx.transport, weight_grads=False)
        clock.lap("mpc_backward")

        # 9-10. DP step over MPC and HE layers
        sites = trainable_sites(stage.layers, trace, back) + self._he_sites(a, delta_z, he, shapes)
        sums = open_gradient_sums(sites, params=self.dp, crypten=crypten, row_weights=shared.weights,
                                  noise=self._noise(ctx, inputs))
        clock.lap("dp_step")
        return StepOutput(noised_sums=dict(sums), batch_size=batch, seconds=time.perf_counter() - start,
                          traffic=ctx.transport.snapshot() - before, layer_costs=trace.costs + back.costs,
                          stages=clock.stages())

    def _noise(self, ctx: Any, inputs: HybridPartyInputs) -> Any:
        key = KeyEndpoint(address=self.endpoints.key_address, trust_pem=self.endpoints.key_trust_pem)
        return step_noise(ctx, inputs, dp=self.dp, key=key, step=self.step_id)

    def _session_objects(self, ctx: Any, inputs: HybridPartyInputs) -> Tuple[Any, Any, Any]:
        """Deserialized keys and the mTLS clients (the driver's E client or None), made once per
        party process and kept in ``ctx.session`` under what they were made from."""
        from ppml_hybrid.he_stage.keyservice_client import PartyKeyClient
        from ppml_hybrid.protocols.conversion_client import PartyConversionClient
        from ppml_hybrid.rpc.evaluator_client import EvaluatorClient, PartyMaskClient

        ep, cred = self.endpoints, own_credential(ctx, inputs)
        verified = ctx.session.get(VERIFIED_KEY_SERVICE)
        if verified != (ep.key_address, ep.key_trust_pem, encryption_only(self.material).digest()):
            raise KeyServiceNotVerifiedError(
                f"party {ctx.rank}: the step names a key service or public key this party has not verified "
                "(run VerifyKeyService first in this session); refusing to encrypt anything under it"
            )
        key = ("hybrid", self.material.digest(), ep, cred)
        cached = ctx.session.get("hybrid")
        if cached is not None and cached[0] == key:
            return cached[1]
        conv_client = PartyConversionClient(
            key=PartyKeyClient(address=ep.key_address, server_trust_pem=ep.key_trust_pem, credential=cred),
            evaluator=PartyMaskClient(address=ep.evaluator_address, server_trust_pem=ep.evaluator_trust_pem,
                                      credential=cred),
        )
        driver = (EvaluatorClient(address=ep.evaluator_address, server_trust_pem=ep.evaluator_trust_pem,
                                  credential=cred) if ctx.rank == ctx.parties - 1 else None)
        objects = (load_public_material(material=self.material), conv_client, driver)
        ctx.session["hybrid"] = (key, objects)
        return objects

    # ------------------------------------------------------------------ conversions

    def _to_he(self, ctx: Any, x: Any, keys: Any, *, params: ConversionParams,
               bounded: bool = False) -> Optional[Tuple[bytes, ...]]:
        """SS->HE; every party's Enc(u_j) goes to the last party, which combines (public data only)."""
        contribution, _, _ = ss_to_he_party(ctx=ctx, x=x, keys=keys, params=params, bounded=bounded)
        comm = ctx.crypten.comm.get()
        last = ctx.parties - 1
        if ctx.rank != last:
            comm.send_obj((contribution.share.party, contribution.share.cts), last)
            return None
        shares = [contribution.share]
        for src in range(last):
            party, cts = comm.recv_obj(src)
            shares.append(EncryptedShare(party=int(party), cts=tuple(cts)))
        enc = combine(cc=keys.cc, public_key=keys.public_key, layout=keys.layout, shares=shares, chain=contribution.chain,
                      params=params, shape=contribution.shape)
        return tuple(serialize_ciphertext(c) for c in enc.cts)

    def _from_he(self, ctx: Any, client: Any, driver: Any, name: str, round_id: int, shape: Tuple[int, int],
                 value_bits: int) -> Any:
        """HE->SS of E's tensor ``name``: announce (with its public bound), (driver) mask, receive."""
        rnd = RoundRef(round_id=round_id, kind=name, shape=shape, value_bits=value_bits)
        client.announce(round=rnd)
        ctx.transport.record_service_call(sent=0, received=0)
        ctx.crypten.cryptensor(torch.zeros(1), src=0).get_plain_text()  # barrier: every party announced
        if driver is not None:
            driver.mask_and_share(step_id=self.step_id, name=name, round=rnd)
            ctx.transport.record_service_call(sent=0, received=0)
        share = client.receive(round=rnd)
        for _ in range(2):  # one int64 share stream from K, one from E (payload bytes)
            ctx.transport.record_service_call(sent=0, received=8 * share.size)
        return share_to_mpc(crypten=ctx.crypten, share=share)

    def _features(self, name: str, shapes: Any) -> int:
        return he_tensor_features(self.model, self.split_layer, name, shapes)

    # ------------------------------------------------------------------ DP sites of the HE blocks

    def _he_sites(self, a: Any, delta_z: Any, he: Mapping[str, Any], shapes: Any) -> List[TrainableSite]:
        sites = []
        n = len(self.model.blocks)
        for j in range(self.split_layer + 1, n + 1):
            block, shape = self.model.blocks[j - 1], shapes[j - 1]
            prefix = f"blocks.{j - 1}"
            inputs = a if j == self.split_layer + 1 else he[f"act.{j - 1}"]
            deltas = delta_z if j == n else he[f"delta_pre.{j}"]
            linear = f"{prefix}.{'conv' if block.type == 'conv' else 'linear'}"
            weight = self.state_dict[f"{linear}.weight"].float()
            bias = self.state_dict[f"{linear}.bias"].float()
            b = int(inputs.size(0))
            if block.type == "conv":
                x4 = inputs.reshape(b, *shape.in_shape)
                pre_hw = _pre_shape(block, shape.in_shape)
                layer = L.Conv2d(f"block{j}.conv", weight, bias, block.stride, block.padding, linear)
                sites.append(TrainableSite(layer, x4, L.Saved(tensors=(x4,), shape=tuple(x4.size())),
                                           deltas.reshape(b, *pre_hw)))
            else:
                layer = L.Linear(f"block{j}.linear", weight, bias, linear)
                sites.append(TrainableSite(layer, inputs, L.Saved(tensors=(inputs,)), deltas))
            if j < n and block.activation == "poly" and self.model.poly.trainable:
                pre, d_post = he[f"pre.{j}"], he[f"delta_post.{j}"]
                act = L.Poly(f"block{j}.act", float(self.state_dict[f"{prefix}.act.a"]),
                             float(self.state_dict[f"{prefix}.act.b"]), f"{prefix}.act", trainable=True)
                sites.append(TrainableSite(act, pre, L.Saved(tensors=(pre, pre.square())), d_post))
        return sites


def _pre_shape(block: Any, in_shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """A block's pre-activation shape per sample (conv output before pooling; dense output)."""
    if block.type != "conv":
        return (block.out,)
    _, h, w = in_shape
    k, p, st = block.kernel_size, block.padding, block.stride
    return (block.out, (h + 2 * p - k) // st + 1, (w + 2 * p - k) // st + 1)


def he_tensor_names(model: ModelConfig, split_layer: int) -> List[str]:
    """HE tensors (besides the logits) the MPC needs after backward, in round order."""
    names = ["delta_input"]
    n = len(model.blocks)
    for j in range(split_layer + 1, n):
        names += [f"act.{j}", f"delta_pre.{j}"]
        if model.blocks[j - 1].activation == "poly" and model.poly.trainable:
            names += [f"pre.{j}", f"delta_post.{j}"]
    return names


def he_tensor_features(model: ModelConfig, split_layer: int, name: str, shapes: Any) -> int:
    """Features per sample of HE tensor ``name`` (``shapes``: :func:`block_shapes`)."""
    if name == "logits":
        return model.num_classes
    if name == "delta_input":
        return int(torch.tensor(shapes[split_layer - 1].out_shape).prod())
    kind, j = name.split(".")
    shape = shapes[int(j) - 1]
    if kind == "act":
        return int(torch.tensor(shape.out_shape).prod())
    # pre.j, delta_pre.j, delta_post.j: before pooling
    return int(torch.tensor(_pre_shape(model.blocks[int(j) - 1], shape.in_shape)).prod())
