"""KMS sealing: seal, restart, unseal (same material, same decryptions); every refusal."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from ks_helpers import encrypt_values, keyservice_config, run_spec, test_pki
from ppml_hybrid.he_stage.material import PublishedMaterial
from ppml_hybrid.he_stage.shares import encode_fixed_point, sum_shares
from ppml_hybrid.keyservice.attestation import DevelopmentSigner
from ppml_hybrid.keyservice.hazmat import KeyVault
from ppml_hybrid.keyservice.main import start_key_service
from ppml_hybrid.rpc.attestation import AttestationPolicy
from ppml_hybrid.keyservice.sealing import (
    AttestingFakeKms, KmsAccessDeniedError, Recipient, SealedKey, SealingError, seal_vault, unseal_vault,
)
from ppml_hybrid.keyservice.sealing.cms import build_enveloped, parse_enveloped
from ppml_hybrid.keyservice.sealing.hazmat_recipient import EphemeralRecipient
from ppml_hybrid.keyservice.spec import KeyServiceSpec
from ppml_hybrid.roles.local_services import key_service_registry
from ppml_hybrid.rpc.messages import RoundRef

KEY_ID = "alias/ppml-hybrid-test"


@pytest.fixture(scope="module")
def signer():
    return DevelopmentSigner()


def kms_for(signer, **kw):
    base = dict(expected_pcrs={i: signer.pcrs[i] for i in (0, 1, 2)}, allow_development=True,
                development_root_pem=signer.root_pem)
    base.update(kw)
    return AttestingFakeKms(key_id=KEY_ID, policy=AttestationPolicy(**base))


@pytest.fixture(scope="module")
def sealed_env(signer):
    spec = run_spec(parties=2)
    vault = KeyVault(spec=spec)
    published = PublishedMaterial(material=vault.public, hiding_bits=spec.he.mask_hiding_bits, max_mask_bits=spec.he.max_mask_bits,
                                  parties=2)
    kms = kms_for(signer)
    sealed = seal_vault(vault=vault, published=published, kms=kms, producer=signer, key_id=KEY_ID)
    return spec, vault, published, kms, sealed


def test_unsealed_vault_decrypts_what_the_original_published_key_encrypted(sealed_env, signer):
    spec, _, published, kms, sealed = sealed_env
    restored, again = unseal_vault(sealed=SealedKey.decode(sealed.encode()), spec=spec, kms=kms, producer=signer,
                                   key_id=KEY_ID)
    assert again.material.digest() == published.material.digest()
    values = np.arange(8, dtype=np.float64).reshape(4, 2) - 3.5
    shares = restored.decrypt_and_split(ref=RoundRef(value_bits=4, round_id=0, kind="logits", shape=(4, 2)),
                                        ciphertexts=encrypt_values(published, values))
    got = sum_shares(*shares)
    want = encode_fixed_point(values=values)
    assert np.max(np.abs(got.astype(np.int64) - want.astype(np.int64))) <= 4


def test_sealed_file_has_no_plaintext_key(sealed_env):
    _, vault, _, _, sealed = sealed_env
    secret = vault.export_for_sealing()
    mid = len(secret) // 2  # the key coefficients (the head is the public parameter block)
    assert secret[mid:mid + 64] not in sealed.encode()


def test_key_service_restart_serves_the_same_material(tmp_path, signer):
    pki = test_pki(2)
    ks = keyservice_config(sealed_key_path=str(tmp_path / "k.sealed"), kms_key_id=KEY_ID)
    spec = KeyServiceSpec(run=run_spec(parties=2), keyservice=ks, client_ca_pem=pki.ca.cert_pem,
                          registry=key_service_registry(pki=pki, parties=2))
    kms = kms_for(signer)
    first = start_key_service(spec=spec, kms=kms, producer=signer)
    first.stop()
    assert (tmp_path / "k.sealed").exists() and oct((tmp_path / "k.sealed").stat().st_mode & 0o777) == "0o600"
    second = start_key_service(spec=spec, kms=kms, producer=signer)
    second.stop()
    assert second.public_material_sha256 == first.public_material_sha256


def test_fake_kms_refuses_wrong_pcr(sealed_env, signer):
    spec, _, _, _, sealed = sealed_env
    strict = kms_for(signer, expected_pcrs={0: bytes(48 * [1])})
    with pytest.raises(KmsAccessDeniedError):
        unseal_vault(sealed=sealed, spec=spec, kms=strict, producer=signer, key_id=KEY_ID)


@pytest.mark.parametrize("case", ["other_root", "no_dev_opt_in", "flipped_bit", "not_rsa", "wrong_algorithm",
                                  "wrong_key_id"])
def test_fake_kms_refuses_bad_attestation(signer, case):
    kms = kms_for(signer)
    holder = EphemeralRecipient()
    doc = signer.attest(user_data=None, nonce=None, public_key=holder.public_der())
    key_id, recipient = KEY_ID, Recipient(attestation_document=doc)
    if case == "other_root":
        kms = kms_for(signer, development_root_pem=DevelopmentSigner().root_pem)
    elif case == "no_dev_opt_in":
        kms = kms_for(signer, allow_development=False)
    elif case == "flipped_bit":
        bad = bytearray(doc)
        bad[len(bad) // 2] ^= 1
        recipient = Recipient(attestation_document=bytes(bad))
    elif case == "not_rsa":
        recipient = Recipient(attestation_document=signer.attest(user_data=None, nonce=None, public_key=b"\x00" * 32))
    elif case == "wrong_algorithm":
        recipient = Recipient(attestation_document=doc, key_encryption_algorithm="RSAES_OAEP_SHA_1")
    elif case == "wrong_key_id":
        key_id = "alias/other"
    with pytest.raises(KmsAccessDeniedError):
        kms.generate_data_key(key_id=key_id, recipient=recipient)


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "ciphertext_blob", "material", "key_id"])
def test_tampered_sealed_key_fails_opaquely(sealed_env, signer, field):
    spec, _, published, kms, sealed = sealed_env
    if field == "material":
        other = dataclasses.replace(published, hiding_bits=published.hiding_bits + 1)
        bad = dataclasses.replace(sealed, material=SealedKey.material_of(other))
    elif field == "key_id":
        bad = dataclasses.replace(sealed, key_id="alias/other")
    else:
        raw = bytearray(getattr(sealed, field))
        raw[len(raw) // 2] ^= 0x01
        bad = dataclasses.replace(sealed, **{field: bytes(raw)})
    with pytest.raises(SealingError) as exc:
        unseal_vault(sealed=bad, spec=spec, kms=kms, producer=signer, key_id=KEY_ID)
    assert str(exc.value) == "sealed key rejected"


def test_garbage_sealed_file_fails_opaquely():
    with pytest.raises(SealingError):
        SealedKey.decode(os.urandom(64))


def test_cms_envelope_is_ber_and_opens_only_for_its_recipient():
    holder, other = EphemeralRecipient(), EphemeralRecipient()
    env = build_enveloped(plaintext=b"k" * 32, recipient_public_der=holder.public_der())
    assert env[:2] == b"\x30\x80" and env.endswith(b"\x00\x00")  # indefinite length, as KMS sends
    parsed = parse_enveloped(env)
    assert len(parsed.iv) == 16 and len(parsed.ciphertext) == 48
    assert holder.open(env) == b"k" * 32
    with pytest.raises(SealingError):
        other.open(env)
    with pytest.raises(SealingError):
        holder.open(env[:-10])
    with pytest.raises(SealingError):
        holder.open(build_enveloped(plaintext=b"short", recipient_public_der=holder.public_der()))


def test_restart_unseals_the_key_the_parent_keeps(tmp_path, signer):
    """The enclave deployment: K's sealed key lives on the parent (the `sealed-store` command,
    here over a Unix socket instead of vsock). The first K finds nothing and stores its sealed
    key there; a restarted K gets it back, unseals it and serves the same material; a blob the
    parent corrupted is refused (K does not silently make new keys)."""
    import subprocess
    import sys
    import time

    store_file, sock = tmp_path / "parent" / "k.sealed", tmp_path / "store.sock"
    proc = subprocess.Popen([sys.executable, "-m", "ppml_hybrid", "sealed-store", "--listen", f"unix:{sock}",
                             "--file", str(store_file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        pki = test_pki(2)
        ks = keyservice_config(sealed_key_path=f"unix:{sock}", kms_key_id=KEY_ID)
        spec = KeyServiceSpec(run=run_spec(parties=2), keyservice=ks, client_ca_pem=pki.ca.cert_pem,
                              registry=key_service_registry(pki=pki, parties=2))
        kms = kms_for(signer)
        first = start_key_service(spec=spec, kms=kms, producer=signer)
        first.stop()
        assert store_file.exists() and oct(store_file.stat().st_mode & 0o777) == "0o600"
        assert SealedKey.decode(store_file.read_bytes()).key_id == KEY_ID
        second = start_key_service(spec=spec, kms=kms, producer=signer)
        second.stop()
        assert second.public_material_sha256 == first.public_material_sha256
        blob = bytearray(store_file.read_bytes())
        blob[-100] ^= 1  # the parent flips a bit of the stored public material
        store_file.write_bytes(bytes(blob))
        with pytest.raises(SealingError):
            start_key_service(spec=spec, kms=kms, producer=signer)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert "handed K nothing" in out and "stored" in out
