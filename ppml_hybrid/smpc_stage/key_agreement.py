"""Pairwise keys between MPC processes: ephemeral X25519 over their authenticated link, then HKDF.

Steps (two processes, each with its own ``os.urandom`` private key):

1. each side sends its 32-byte X25519 public key to the other (point-to-point, one message
   each way) and receives the peer's;
2. both compute the same shared secret and derive one 256-bit key per label with
   HKDF-SHA256 (salt: the two public keys in rank order; info: the protocol label).

Who learns what: the public keys travel inside the two processes' mutually authenticated TLS
link (:mod:`.links`, certificates pinned per rank), so no one else sees them or can substitute
their own; even a link eavesdropper would learn nothing of the derived keys (computational
Diffie-Hellman). The streams are separate from the TLS keys: they must outlive a connection
and be shared by exactly these two roles. No key is logged or written.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ppml_hybrid.privacy.keystream import KEY_BYTES

PROTOCOL_LABEL = b"ppml-hybrid mpc keys v1|"


def agree(*, me: int, peer: int, comm: Any, labels: Sequence[bytes]) -> Dict[bytes, bytes]:
    """Keys shared with rank ``peer`` (one per label), agreed over ``comm``'s link to it.

    ``comm`` is this process's :class:`~.link_communicator.LinkCommunicator`. Both processes
    must call this with the same labels (sends never block on the peer, so any order works).
    """
    secret = X25519PrivateKey.from_private_bytes(os.urandom(32))
    mine = secret.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    comm.send_bytes(mine, peer, op="key_agreement")
    theirs = comm.recv_bytes(peer, op="key_agreement")
    if len(theirs) != 32:
        raise ValueError(f"rank {peer} sent a {len(theirs)}-byte public key (expected 32)")
    shared = secret.exchange(X25519PublicKey.from_public_bytes(theirs))
    salt = mine + theirs if me < peer else theirs + mine
    keys = {}
    for label in labels:
        keys[label] = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt,
                           info=PROTOCOL_LABEL + label).derive(shared)
    return keys
