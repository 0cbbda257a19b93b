"""Findings 2 and 4 of the privacy review, as regression tests with the real K and E code.

* K's sub-grid guessing game (finding 2): K knows two candidate tensors v0, v1 that differ by
  2^-16 in one activation propagated through real-valued weights (so they differ off the
  2^-16 grid). E masks v_b with its real ``mask_tensor``; K decrypts with its real secret key
  (the test plays the curious K) and guesses b from where its plaintexts sit inside their
  2^-16 cells. Over 1,000 trials: accuracy within 0.5 +- 0.05 with the project's real-valued
  masks; far above it with the old masks on the 2^-16 grid (switched back on in the test).
* E's bisection (finding 4): E holds Enc(v) of a secret v and submits scaled, shifted copies
  of it unmasked; each refused decryption is one bit "outside the range". With the old
  behaviour (a refused round stays open for a retry, later rounds go on) 40 probes pin v to
  within 1; now the first refusal stops the run and every later request is refused.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ks_helpers import keyservice_config, run_spec, test_pki
from ppml_hybrid.he_stage.codec import encrypt_batch
from ppml_hybrid.he_stage.evaluator import masking
from ppml_hybrid.he_stage.keys import load_public_material, serialize_ciphertext
from ppml_hybrid.keyservice.hazmat import KeyVault
from ppml_hybrid.rpc.errors import InvalidCiphertext
from ppml_hybrid.rpc.keyservice_errors import RunStoppedError
from ppml_hybrid.rpc.messages import RoundRef

TRIALS = 1000
VALUE_BITS = 2


@pytest.fixture(scope="module")
def vault():
    return KeyVault(spec=run_spec(parties=2, batch=4))


OLD_MASK_BITS = 30  # the old default width (he.mask_bits = 30)


def _grid_mask(*, bits: int, shape: tuple) -> np.ndarray:
    """The old mask: uniform in [-2^30, 2^30) and a multiple of 2^-16 (K learns v's place in its cell)."""
    r = np.random.default_rng().integers(-(2 ** (OLD_MASK_BITS + 16)), 2 ** (OLD_MASK_BITS + 16), size=shape)
    return r.astype(np.float64) / 2 ** 16


def _play(vault, trials: int, mask_bits: int) -> float:
    """K's accuracy at telling v0 from v1 (K's view: the decrypted doubles of every used slot)."""
    ev = load_public_material(material=vault.public)
    cc, sk, layout = ev.cc, vault._secret.secret_key, ev.layout  # the test plays K: its own key
    rng = np.random.default_rng(1)
    weights = rng.uniform(-1, 1, size=(8,))
    base = rng.uniform(-1, 1, size=(4, 8))
    v = [base, base + (2.0 ** -16) * weights]  # one activation 2^-16 apart, through real weights
    cells = [np.mod(x * 2 ** 16, 1.0) for x in v]
    correct = 0
    for _ in range(trials):
        b = int(rng.integers(0, 2))
        t = encrypt_batch(cc=cc, public_key=ev.public_key, layout=layout, values=v[b])
        masked = masking.mask_tensor(cc=cc, tensor=t, batch=4, mask_bits=mask_bits, parties=2)
        import openfhe

        vectors = []
        for data in masked.ciphertexts:
            pt = cc.Decrypt(sk, openfhe.DeserializeCiphertextString(data, openfhe.BINARY))
            pt.SetLength(layout.slots)
            vectors.append(np.asarray(pt.GetRealPackedValue()))
        seen = np.mod(layout.unpack(vectors=vectors, n_features=8, batch=4) * 2 ** 16, 1.0)
        # distance of K's cell positions to each candidate's, on the circle [0, 1)
        d = [np.abs(((seen - c) + 0.5) % 1.0 - 0.5).sum() for c in cells]
        correct += int(int(d[1] < d[0]) == b)
    return correct / trials


@pytest.mark.parametrize("mask_bits", [OLD_MASK_BITS, VALUE_BITS + 32], ids=["old-width", "run-width"])
def test_k_cannot_tell_values_apart_below_the_fixed_point_grid(vault, mask_bits):
    """Real-valued masks: chance, at the run's width and even at the old, narrower width (where
    decoding noise alone would not hide the cell)."""
    accuracy = _play(vault, TRIALS, mask_bits)
    assert abs(accuracy - 0.5) <= 0.05, accuracy


def test_grid_masks_let_k_tell_them_apart(vault, monkeypatch):
    monkeypatch.setattr(masking, "real_mask", _grid_mask)  # the old behaviour switched back on
    accuracy = _play(vault, 200, OLD_MASK_BITS)
    assert accuracy > 0.8, accuracy


# ---------------------------------------------------------------------------------- bisection


class _Harness:
    def __init__(self, running, pki) -> None:
        from ppml_hybrid.he_stage.keyservice_client import EvaluatorKeyClient, PartyKeyClient
        from ppml_hybrid.roles.local_services import party_name
        from ppml_hybrid.rpc.tls import EVALUATOR

        self.running, self._clients = running, []

        def make(cls, name):
            c = cls(address=running.address, server_trust_pem=running.trust_pem, credential=pki.clients[name],
                    timeout_s=30.0)
            self._clients.append(c)
            return c

        self.party = lambda j: make(PartyKeyClient, party_name(j))
        self.evaluator = lambda: make(EvaluatorKeyClient, EVALUATOR)

    def close(self) -> None:
        for c in self._clients:
            c.close()
        self.running.stop()


@pytest.fixture
def k_service():
    from ppml_hybrid.keyservice.main import start_key_service
    from ppml_hybrid.keyservice.spec import KeyServiceSpec
    from ppml_hybrid.roles.local_services import key_service_registry

    pki = test_pki(2)
    spec = KeyServiceSpec(run=run_spec(parties=2), keyservice=keyservice_config(round_quota=64, max_open_rounds=64),
                          client_ca_pem=pki.ca.cert_pem, registry=key_service_registry(pki=pki, parties=2))
    h = _Harness(start_key_service(spec=spec), pki)
    yield h
    h.close()


class _Bisector:
    """E's side: probes 'is |v - t| < 2^k ?' on Enc(v), one announced round per accepted probe."""

    def __init__(self, k, secret: float) -> None:
        self.k = k
        self.e = k.evaluator()
        self.parties = [k.party(1), k.party(2)]
        published = self.parties[0].get_public_material()
        self.ev = load_public_material(material=published.material)
        self.hiding = published.hiding_bits
        self.ct = encrypt_batch(cc=self.ev.cc, public_key=self.ev.public_key, layout=self.ev.layout,
                                values=np.full((4, 2), secret)).cts
        self.round = 0
        self.probes = 0
        self._announce()

    def _announce(self) -> None:
        self.ref = RoundRef(round_id=self.round, kind="logits", shape=(4, 2), value_bits=0)
        for p in self.parties:
            p.announce(round=self.ref)

    def within(self, t: float, k: int) -> bool:
        """K accepts |s (v - t)| < 2^H (about) with s = 2^(H - k): i.e. |v - t| < 2^k."""
        cc = self.ev.cc
        s = 2.0 ** (self.hiding - k)
        cts = tuple(serialize_ciphertext(cc.EvalAdd(cc.EvalMult(c, s), -s * t)) for c in self.ct)
        self.probes += 1
        try:
            self.e.decrypt_and_share(round=self.ref, ciphertexts=cts)
        except InvalidCiphertext:
            return False
        for p in self.parties:  # accepted: the round is used up, the parties announce the next one
            p.fetch_share(round_id=self.round)
        self.round += 1
        self._announce()
        return True


def _bisect(b: _Bisector, top: int = 17) -> float:
    """Shrinking balls: |v - t| < 2^k for k = top .. 0 (at most two probes per level)."""
    t = 0.0
    assert b.within(t, top)
    for k in range(top - 1, -1, -1):
        for cand in (t - 2.0 ** k, t + 2.0 ** k):
            if b.within(cand, k):
                t = cand
                break
    return t


SECRET = 123456.7


def test_refused_decryption_stops_the_run_so_bisection_gets_one_bit(k_service):
    b = _Bisector(k_service, SECRET)
    with pytest.raises(RunStoppedError):
        _bisect(b)
    assert b.probes <= 3  # one refusal, and the request after it, end the game
    with pytest.raises(RunStoppedError):
        b.parties[0].fetch_share(round_id=b.round)


def test_with_retries_allowed_bisection_finds_the_secret(k_service, monkeypatch):
    from ppml_hybrid.keyservice.rounds import OPEN, RoundBook

    def old_abort(self, *, round_id: int, reason: str):  # the behaviour before the fix: retry in quota
        with self._cond:
            self._rounds[round_id].state = OPEN
        return InvalidCiphertext()

    monkeypatch.setattr(RoundBook, "stop", old_abort)
    b = _Bisector(k_service, SECRET)
    t = _bisect(b)
    assert abs(t - SECRET) < 1.0 and b.probes <= 40, (t, b.probes)
    assert math.floor(t) in (123456, 123457)
