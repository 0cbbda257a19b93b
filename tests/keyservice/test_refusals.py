"""Every refusal of the key service, one test each, over real gRPC + mTLS (K in this process)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from ks_helpers import encrypt_values
from ppml_hybrid.he_stage.keyservice_client import PartyKeyClient
from ppml_hybrid.he_stage.shares import encode_fixed_point, sum_shares
from ppml_hybrid.rpc.keyservice_errors import (
    AnnouncementMismatchError, NotRegisteredError, OutOfOrderRoundError, QuotaExceededError, RoundMismatchError,
    RoundReplayError, RunStoppedError, ShareNotReadyError, TooManyOpenRoundsError, UnknownRoundError, ValueBoundError,
)
from ppml_hybrid.rpc.errors import InvalidCiphertext, ServiceError, UnavailableError
from ppml_hybrid.rpc.messages import RoundRef
from ppml_hybrid.rpc.tls import Credential

R0 = RoundRef(value_bits=4, round_id=0, kind="logits", shape=(4, 2))


def values(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-3, 3, size=(4, 2))


def announce_all(k, ref: RoundRef) -> None:
    for j in (1, 2):
        k.party(j).announce(round=ref)


def status(exc: ServiceError) -> grpc.StatusCode:
    return type(exc).status


def test_happy_path_decrypts_an_announced_round_into_shares(k, published):
    announce_all(k, R0)
    receipt = k.evaluator().decrypt_and_share(round=R0, ciphertexts=encrypt_values(published, values()))
    assert receipt.round_id == 0 and receipt.ciphertexts == 1
    s1, s2 = k.party(1).fetch_share(round_id=0), k.party(2).fetch_share(round_id=0)
    assert s1.round == R0 == s2.round and not np.array_equal(s1.share, s2.share)
    err = np.abs(sum_shares(s1.share, s2.share) - encode_fixed_point(values=values()))
    assert err.max() <= 4


def test_unregistered_certificate_is_denied(k):
    stranger = k.party(0, name="stranger")  # signed by the same client CA, but not registered
    with pytest.raises(NotRegisteredError, match="not registered") as ei:
        stranger.announce(round=R0)
    assert status(ei.value) == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(NotRegisteredError):
        stranger.get_public_material()


def test_missing_client_certificate_fails_the_handshake(k, pki):
    # a self-made key/cert pair not signed by the client CA: the TLS handshake itself fails
    from ppml_hybrid.rpc.tls import self_signed_server
    fake = self_signed_server(common_name="party-1").leaf
    c = PartyKeyClient(address=k.running.address, server_trust_pem=k.running.trust_pem,
                       credential=Credential(cert_pem=fake.cert_pem, key_pem=fake.key_pem), timeout_s=5.0)
    with pytest.raises(UnavailableError):
        c.announce(round=R0)
    c.close()


def test_party_cannot_submit_ciphertexts(k, published):
    announce_all(k, R0)
    as_party = k.evaluator(name="party-1")  # E's client class, party 1's certificate
    with pytest.raises(NotRegisteredError, match="party 1 may not call DecryptAndShare") as ei:
        as_party.decrypt_and_share(round=R0, ciphertexts=encrypt_values(published, values()))
    assert status(ei.value) == grpc.StatusCode.PERMISSION_DENIED


def test_evaluator_cannot_fetch_shares(k, published):
    announce_all(k, R0)
    k.evaluator().decrypt_and_share(round=R0, ciphertexts=encrypt_values(published, values()))
    as_e = k.party(0, name="evaluator")  # the party client class, E's certificate
    with pytest.raises(NotRegisteredError, match="evaluator may not call FetchShare"):
        as_e.fetch_share(round_id=0)


def test_evaluator_cannot_announce(k):
    with pytest.raises(NotRegisteredError, match="evaluator may not call Announce"):
        k.party(0, name="evaluator").announce(round=R0)


def test_arbitrary_ciphertexts_of_an_unannounced_round_are_refused(k, published):
    cts = encrypt_values(published, values())
    with pytest.raises(UnknownRoundError, match="0 of 2") as ei:
        k.evaluator().decrypt_and_share(round=R0, ciphertexts=cts)
    assert status(ei.value) == grpc.StatusCode.FAILED_PRECONDITION
    k.party(1).announce(round=R0)  # one party is not enough
    with pytest.raises(UnknownRoundError, match="1 of 2"):
        k.evaluator().decrypt_and_share(round=R0, ciphertexts=cts)


def test_replayed_round_is_refused(k, published):
    announce_all(k, R0)
    cts = encrypt_values(published, values())
    k.evaluator().decrypt_and_share(round=R0, ciphertexts=cts)
    with pytest.raises(RoundReplayError, match="already decrypted") as ei:
        k.evaluator().decrypt_and_share(round=R0, ciphertexts=cts)
    assert status(ei.value) == grpc.StatusCode.FAILED_PRECONDITION


def test_replayed_announcement_is_refused(k):
    k.party(1).announce(round=R0)
    with pytest.raises(RoundReplayError, match="already announced"):
        k.party(1).announce(round=R0)


def test_replayed_share_fetch_is_refused(k, published):
    announce_all(k, R0)
    k.evaluator().decrypt_and_share(round=R0, ciphertexts=encrypt_values(published, values()))
    k.party(1).fetch_share(round_id=0)
    with pytest.raises(RoundReplayError, match="already delivered"):
        k.party(1).fetch_share(round_id=0)


def test_out_of_order_submission_is_refused(k, published):
    r1 = RoundRef(value_bits=4, round_id=1, kind="logits", shape=(4, 2))
    announce_all(k, R0)
    announce_all(k, r1)
    with pytest.raises(OutOfOrderRoundError, match="round 0 must be decrypted before round 1"):
        k.evaluator().decrypt_and_share(round=r1, ciphertexts=encrypt_values(published, values()))


def test_out_of_order_announcement_is_refused(k):
    with pytest.raises(OutOfOrderRoundError, match="must announce round 0 next"):
        k.party(1).announce(round=RoundRef(value_bits=4, round_id=1, kind="logits", shape=(4, 2)))


def test_unknown_round_fetch_is_refused(k):
    with pytest.raises(UnknownRoundError):
        k.party(1).fetch_share(round_id=5)


def test_fetch_before_decryption_times_out_typed(k):
    announce_all(k, R0)
    with pytest.raises(ShareNotReadyError, match="not decrypted within"):
        k.party(1).fetch_share(round_id=0)


def test_shape_the_round_did_not_announce_is_refused(k, published):
    announce_all(k, R0)
    wide = RoundRef(value_bits=4, round_id=0, kind="logits", shape=(4, 3))
    with pytest.raises(RoundMismatchError, match=r"announced as kind 'logits' shape \(4, 2\)") as ei:
        k.evaluator().decrypt_and_share(round=wide, ciphertexts=encrypt_values(published, values()))
    assert status(ei.value) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(RoundMismatchError):
        k.evaluator().decrypt_and_share(round=RoundRef(value_bits=4, round_id=0, kind="delta_input", shape=(4, 2)),
                                        ciphertexts=encrypt_values(published, values()))
    with pytest.raises(RoundMismatchError, match="takes 1 ciphertexts; got 2"):
        k.evaluator().decrypt_and_share(round=R0, ciphertexts=encrypt_values(published, values()) * 2)


def test_conflicting_announcements_are_refused(k):
    k.party(1).announce(round=R0)
    with pytest.raises(AnnouncementMismatchError, match="party 2 announced"):
        k.party(2).announce(round=RoundRef(value_bits=4, round_id=0, kind="logits", shape=(8, 2)))


def test_requests_past_the_round_quota_are_refused(k, published):
    announce_all(k, R0)
    bad = RoundRef(value_bits=4, round_id=0, kind="logits", shape=(4, 3))
    cts = encrypt_values(published, values())
    for _ in range(4):  # keyservice.round_quota = 4: refused requests count too
        with pytest.raises(RoundMismatchError):
            k.evaluator().decrypt_and_share(round=bad, ciphertexts=cts)
    with pytest.raises(QuotaExceededError, match="quota of 4 requests for round 0") as ei:
        k.evaluator().decrypt_and_share(round=R0, ciphertexts=cts)
    assert status(ei.value) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_announcing_too_far_ahead_is_refused(k):
    for r in range(3):  # keyservice.max_open_rounds = 3
        k.party(1).announce(round=RoundRef(value_bits=4, round_id=r, kind="logits", shape=(4, 2)))
    with pytest.raises(TooManyOpenRoundsError) as ei:
        k.party(1).announce(round=RoundRef(value_bits=4, round_id=3, kind="logits", shape=(4, 2)))
    assert status(ei.value) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_malformed_ciphertext_stops_the_run_with_one_opaque_error(k, published):
    announce_all(k, R0)
    with pytest.raises(RunStoppedError, match="ciphertext rejected") as ei:
        k.evaluator().decrypt_and_share(round=R0, ciphertexts=(b"\x00garbage" * 8,))
    assert status(ei.value) == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(RunStoppedError):  # no retry
        k.evaluator().decrypt_and_share(round=R0, ciphertexts=encrypt_values(published, values()))
    with pytest.raises(RunStoppedError):  # and nothing else either: the run is over
        k.party(1).fetch_share(round_id=0)


def test_out_of_range_plaintext_stops_the_run(k, published):
    announce_all(k, R0)  # |v| = 2^45, far above 2^(V + H) + 2^(V + 1): not a masked value of this round
    with pytest.raises(RunStoppedError, match="outside the round's announced bound"):
        k.evaluator().decrypt_and_share(round=R0, ciphertexts=encrypt_values(published, np.full((4, 2), 2.0 ** 45)))
    with pytest.raises(RunStoppedError):
        k.party(2).announce(round=RoundRef(value_bits=4, round_id=1, kind="logits", shape=(4, 2)))


def test_a_value_bound_needing_a_mask_wider_than_allowed_is_refused(k):
    with pytest.raises(ValueBoundError, match="max_mask_bits"):
        k.party(1).announce(round=RoundRef(value_bits=30, round_id=0, kind="logits", shape=(4, 2)))


def test_malformed_round_is_invalid_argument(k):
    with pytest.raises(Exception) as ei:
        RoundRef(value_bits=4, round_id=0, kind="bad kind!", shape=(4, 2))
    assert type(ei.value).status == grpc.StatusCode.INVALID_ARGUMENT
