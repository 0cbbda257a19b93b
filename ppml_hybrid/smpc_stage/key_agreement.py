"""Pairwise keys between MPC processes: ephemeral X25519 over torch.distributed, then HKDF.

Steps (two processes, each with its own ``os.urandom`` private key):

1. each side sends its 32-byte X25519 public key to the other (point-to-point, one message
   each way) and receives the peer's;
2. both compute the same shared secret and derive one 256-bit key per label with
   HKDF-SHA256 (salt: the two public keys in rank order; info: the protocol label).

Who learns what: an eavesdropper on the link sees two public keys and learns nothing of the
derived keys (computational Diffie-Hellman). The agreement is not authenticated here: on one
machine the links are loopback; across hosts the MPC links are meant to run inside mutually
authenticated channels (the multi-site deployment). No key is logged or written.
"""

from __future__ import annotations

import os
from typing import Dict, Sequence

import torch
import torch.distributed as dist
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ppml_hybrid.privacy.keystream import KEY_BYTES

PROTOCOL_LABEL = b"ppml-hybrid mpc keys v1|"


def agree(*, me: int, peer: int, group: object, labels: Sequence[bytes]) -> Dict[bytes, bytes]:
    """Keys shared with global rank ``peer`` (one per label), agreed over ``group``.

    Both processes must call this with the same labels (in any order of calls across pairs,
    as long as each pair's two calls meet: callers order their agreements by peer rank).
    """
    secret = X25519PrivateKey.from_private_bytes(os.urandom(32))
    mine = secret.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    out_t = torch.tensor(list(mine), dtype=torch.uint8)
    in_t = torch.zeros(32, dtype=torch.uint8)
    send = dist.isend(out_t, peer, group=group)
    dist.recv(in_t, src=peer, group=group)
    send.wait()
    theirs = bytes(in_t.tolist())
    shared = secret.exchange(X25519PublicKey.from_public_bytes(theirs))
    salt = mine + theirs if me < peer else theirs + mine
    keys = {}
    for label in labels:
        keys[label] = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt,
                           info=PROTOCOL_LABEL + label).derive(shared)
    return keys
