"""K's public material on the wire: a header, then each serialized blob in chunks.

Fields: the CKKS parameters, the slot layout, the rotation indices, the serialized context,
public key, relinearisation key and rotation keys, the HE->SS mask parameters, and a SHA-256
over the blobs (``PublicMaterial.digest``) that the receiver recomputes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Iterator

from ppml_hybrid.he_stage.errors import KeyMaterialError
from ppml_hybrid.he_stage.keys import PublicMaterial
from ppml_hybrid.he_stage.layout import SlotLayout
from ppml_hybrid.he_stage.params import CKKSParams, DepthPlan
from ppml_hybrid.rpc import keyservice_pb2 as pb
from ppml_hybrid.rpc.options import CHUNK_BYTES

BLOBS = ("context", "public_key", "eval_mult_key", "rotation_keys")


@dataclass(frozen=True)
class PublishedMaterial:
    """What GetPublicMaterial returns: the public material and the round conversion facts."""

    material: PublicMaterial
    hiding_bits: int  # H: statistical hiding per masked slot
    max_mask_bits: int  # V + H never exceeds this
    parties: int


def params_to_pb(p: CKKSParams) -> pb.CKKSParamsPb:
    d = p.depth_plan
    return pb.CKKSParamsPb(
        name=p.name, security_level=p.security_level, ring_dim=p.ring_dim, scale_bits=p.scale_bits,
        first_mod_bits=p.first_mod_bits, multiplicative_depth=p.multiplicative_depth, insecure=p.insecure,
        depth_plan=pb.DepthPlanPb(conversion_levels=d.conversion_levels, compute_levels=d.compute_levels,
                                  spare_levels=d.spare_levels, forward_levels=d.forward_levels,
                                  backward_levels=d.backward_levels))


def params_from_pb(m: pb.CKKSParamsPb) -> CKKSParams:
    d = m.depth_plan
    return CKKSParams(
        name=m.name, security_level=m.security_level, ring_dim=int(m.ring_dim), scale_bits=int(m.scale_bits),
        first_mod_bits=int(m.first_mod_bits), multiplicative_depth=int(m.multiplicative_depth), insecure=bool(m.insecure),
        depth_plan=DepthPlan(conversion_levels=d.conversion_levels, compute_levels=d.compute_levels,
                             spare_levels=d.spare_levels, forward_levels=d.forward_levels,
                             backward_levels=d.backward_levels))


def to_chunks(published: PublishedMaterial, *, chunk_bytes: int = CHUNK_BYTES) -> Iterator[pb.PublicMaterialChunk]:
    m = published.material
    header = pb.PublicMaterialHeader(
        params=params_to_pb(m.params), layout=pb.SlotLayoutPb(slots=m.layout.slots, block=m.layout.block,
                                                              groups=m.layout.groups),
        rotation_indices=list(m.rotation_indices), blob_sizes={f: len(getattr(m, f)) for f in BLOBS},
        sha256=m.digest(), hiding_bits=published.hiding_bits, max_mask_bits=published.max_mask_bits,
        parties=published.parties)
    yield pb.PublicMaterialChunk(header=header)
    for f in BLOBS:
        data = getattr(m, f)
        for i in range(0, len(data), chunk_bytes):
            yield pb.PublicMaterialChunk(blob=pb.BlobChunk(field=f, data=data[i:i + chunk_bytes]))


def from_chunks(chunks: Iterable[pb.PublicMaterialChunk]) -> PublishedMaterial:
    it = iter(chunks)
    first = next(it, None)
    if first is None or first.WhichOneof("part") != "header":
        raise KeyMaterialError("the public material stream does not start with its header")
    h = first.header
    parts: Dict[str, list] = {f: [] for f in BLOBS}
    for c in it:
        if c.WhichOneof("part") != "blob" or c.blob.field not in parts:
            raise KeyMaterialError("unexpected chunk in the public material stream")
        parts[c.blob.field].append(c.blob.data)
    blobs = {f: b"".join(v) for f, v in parts.items()}
    for f in BLOBS:
        if len(blobs[f]) != h.blob_sizes.get(f, -1):
            raise KeyMaterialError(f"public material field {f} arrived incomplete; fetch it again")
    material = PublicMaterial(
        params=params_from_pb(h.params), layout=SlotLayout(slots=int(h.layout.slots), block=int(h.layout.block),
                                                           groups=int(h.layout.groups)),
        rotation_indices=tuple(int(i) for i in h.rotation_indices), **blobs)
    if material.digest() != h.sha256:
        raise KeyMaterialError("public material digest mismatch; fetch it again from the key service")
    return PublishedMaterial(material=material, hiding_bits=int(h.hiding_bits), max_mask_bits=int(h.max_mask_bits),
                             parties=int(h.parties))
