"""The AWS KMS client: exact requests against a local HTTPS server that answers like KMS.

The server (``http.server`` over loopback TLS, a self-signed CA, certificate for
kms.us-east-1.amazonaws.com) checks the SigV4 signature of what actually arrived and answers
through :class:`AttestingFakeKms` (real CMS EnvelopedData), so the production parsing path runs.
Also: error mapping, TLS verification, and the CLI refusing to start without credentials.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ks_helpers import keyservice_config, run_spec, test_pki
from ppml_hybrid.errors import ConfigError
from ppml_hybrid.he_stage.material import PublishedMaterial
from ppml_hybrid.keyservice.attestation import DevelopmentSigner
from ppml_hybrid.keyservice.hazmat import KeyVault
from ppml_hybrid.keyservice.main import cli_kms_client
from ppml_hybrid.keyservice.sealing import AttestingFakeKms, KmsAccessDeniedError, Recipient, seal_vault, unseal_vault
from ppml_hybrid.keyservice.sealing.awskms import AwsKmsClient, connector_for, map_error, tcp_connector
from ppml_hybrid.rpc.attestation import AttestationPolicy
from ppml_hybrid.keyservice.sealing.errors import (
    KmsCredentialsError, KmsInvalidCiphertextError, KmsKeyError, KmsRequestError, KmsUnavailableError,
)
from ppml_hybrid.keyservice.sealing.hazmat_recipient import EphemeralRecipient
from ppml_hybrid.keyservice.sealing.sigv4 import AwsCredentials, sign_request
from ppml_hybrid.keyservice.spec import KeyServiceSpec
from ppml_hybrid.roles.local_services import key_service_registry
from ppml_hybrid.rpc.launch import READY

REGION = "us-east-1"
HOST = f"kms.{REGION}.amazonaws.com"
KEY_ID = "alias/ppml-hybrid-test"
KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
CREDS = AwsCredentials("ASIAEXAMPLE", "secret-example", "token-example")


def _pki(tmp_path_factory):
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test KMS CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("kms-tls")
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM)
                                 + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    return d / "ca.pem", d / "leaf.pem"


class _KmsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def _answer(self, status, obj, error_type=None):
        raw = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(raw)))
        if error_type:
            self.send_header("x-amzn-ErrorType", error_type)
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self):
        srv = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {k.lower(): v for k, v in self.headers.items()}
        srv.requests.append((self.path, headers, body))
        if srv.forced is not None:
            return self._answer(*srv.forced)
        # verify SigV4 over what actually arrived (names listed in SignedHeaders, values as received)
        auth = headers.get("authorization", "")
        signed_names = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
        replay = sign_request(method="POST", host=headers["host"], path=self.path, body=body, credentials=CREDS,
                              region=REGION, service="kms",
                              now=dt.datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(
                                  tzinfo=dt.timezone.utc),
                              headers=[(n, headers[n]) for n in signed_names
                                       if n not in ("host", "x-amz-date", "x-amz-security-token")])
        if replay.authorization != auth:
            return self._answer(400, {"__type": "InvalidSignatureException", "message": "signature mismatch"})
        req = json.loads(body)
        rcpt = Recipient(attestation_document=base64.b64decode(req["Recipient"]["AttestationDocument"]),
                         key_encryption_algorithm=req["Recipient"]["KeyEncryptionAlgorithm"])
        try:
            if headers["x-amz-target"] == "TrentService.GenerateDataKey":
                r = srv.fake.generate_data_key(key_id=req["KeyId"], recipient=rcpt)
                out = {"KeyId": KEY_ARN, "CiphertextBlob": base64.b64encode(r.ciphertext_blob).decode(),
                       "CiphertextForRecipient": base64.b64encode(r.ciphertext_for_recipient).decode(),
                       "Plaintext": None}
            else:
                r = srv.fake.decrypt(key_id=req["KeyId"], ciphertext_blob=base64.b64decode(req["CiphertextBlob"]),
                                     recipient=rcpt)
                out = {"KeyId": KEY_ARN, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                       "CiphertextForRecipient": base64.b64encode(r.ciphertext_for_recipient).decode()}
        except KmsAccessDeniedError as exc:
            return self._answer(400, {"__type": "AccessDeniedException", "message": str(exc)})
        except KmsInvalidCiphertextError:
            return self._answer(400, {"__type": "InvalidCiphertextException", "message": None})
        self._answer(200, out)


@pytest.fixture(scope="module")
def signer():
    return DevelopmentSigner()


@pytest.fixture(scope="module")
def kms_server(tmp_path_factory, signer):
    ca_pem, leaf_pem = _pki(tmp_path_factory)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _KmsHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(leaf_pem))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.requests, srv.forced = [], None
    srv.fake = AttestingFakeKms(key_id=KEY_ID, policy=AttestationPolicy(
        expected_pcrs={i: signer.pcrs[i] for i in (0, 1, 2)}, allow_development=True,
        development_root_pem=signer.root_pem))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    srv.ca_pem = str(ca_pem)
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def server(kms_server):
    kms_server.requests.clear()
    kms_server.forced = None
    return kms_server


def client(srv, **kw):
    base = dict(region=REGION, credentials=CREDS, connector=tcp_connector("127.0.0.1", srv.server_address[1]),
                ca_bundle=srv.ca_pem, timeout_s=10.0)
    base.update(kw)
    return AwsKmsClient(**base)


def recipient(signer):
    holder = EphemeralRecipient()
    return holder, Recipient(attestation_document=signer.attest(user_data=None, nonce=None,
                                                                public_key=holder.public_der()))


def test_generate_data_key_and_decrypt_requests_are_exact(server, signer):
    kms = client(server)
    holder, rcpt = recipient(signer)
    res = kms.generate_data_key(key_id=KEY_ID, recipient=rcpt)
    data_key = holder.open(res.ciphertext_for_recipient)  # the production CMS path
    assert len(data_key) == 32 and res.key_id == KEY_ARN
    holder2, rcpt2 = recipient(signer)
    again = kms.decrypt(key_id=KEY_ID, ciphertext_blob=res.ciphertext_blob, recipient=rcpt2)
    assert holder2.open(again.ciphertext_for_recipient) == data_key

    (path, h, body), (path2, h2, body2) = server.requests
    assert path == path2 == "/"
    assert h["host"] == HOST and h["content-type"] == "application/x-amz-json-1.1"
    assert h["x-amz-target"] == "TrentService.GenerateDataKey" and h2["x-amz-target"] == "TrentService.Decrypt"
    assert h["x-amz-security-token"] == "token-example"
    assert h["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/{h['x-amz-date'][:8]}/{REGION}/kms"
                                         "/aws4_request, SignedHeaders=content-type;host;x-amz-date;"
                                         "x-amz-security-token;x-amz-target, Signature=")
    assert json.loads(body) == {"KeyId": KEY_ID, "KeySpec": "AES_256", "Recipient": {
        "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
        "AttestationDocument": base64.b64encode(rcpt.attestation_document).decode()}}
    assert json.loads(body2) == {"KeyId": KEY_ID, "CiphertextBlob": base64.b64encode(res.ciphertext_blob).decode(),
                                 "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                                               "AttestationDocument": base64.b64encode(
                                                   rcpt2.attestation_document).decode()}}
    assert "secret-example" not in repr(kms) and "secret-example" not in json.dumps(h)


def test_seal_and_unseal_through_https(server, signer):
    spec = run_spec(parties=2)
    vault = KeyVault(spec=spec)
    published = PublishedMaterial(material=vault.public, hiding_bits=spec.he.mask_hiding_bits, max_mask_bits=spec.he.max_mask_bits,
                                  parties=2)
    sealed = seal_vault(vault=vault, published=published, kms=client(server), producer=signer, key_id=KEY_ID)
    _, again = unseal_vault(sealed=sealed, spec=spec, kms=client(server), producer=signer, key_id=KEY_ID)
    assert again.material.digest() == published.material.digest()


def test_key_policy_refusal_is_typed_and_says_what_to_check(server, signer):
    strict = DevelopmentSigner()  # PCRs the fake's policy does not name
    _, rcpt = recipient(strict)
    with pytest.raises(KmsAccessDeniedError) as exc:
        client(server).generate_data_key(key_id=KEY_ID, recipient=rcpt)
    assert "AccessDeniedException" in str(exc.value) and "kms:RecipientAttestation:PCR" in str(exc.value)


def test_wrong_credentials_are_refused(server, signer):
    _, rcpt = recipient(signer)
    with pytest.raises(KmsCredentialsError) as exc:
        client(server, credentials=AwsCredentials("ASIAEXAMPLE", "other", "token-example")).generate_data_key(
            key_id=KEY_ID, recipient=rcpt)
    assert "aws_credentials" in str(exc.value) and "clock" in str(exc.value)


def test_expired_credentials_are_not_sent(server, signer):
    _, rcpt = recipient(signer)
    old = AwsCredentials("ASIAEXAMPLE", "secret-example", "t",
                         expiration=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))
    with pytest.raises(KmsCredentialsError):
        client(server, credentials=old).generate_data_key(key_id=KEY_ID, recipient=rcpt)
    assert server.requests == []


@pytest.mark.parametrize("status,body,header,cls,needle", [
    (400, {"__type": "com.amazonaws.kms#NotFoundException", "message": "Alias not found"}, None, KmsKeyError,
     "kms_region"),
    (400, {"__type": "KMSInvalidStateException", "message": "pending deletion"}, None, KmsKeyError, "Enabled"),
    (400, {"__type": "InvalidCiphertextException"}, None, KmsInvalidCiphertextError, "CiphertextBlob"),
    (400, {"__type": "UnrecognizedClientException", "message": "The security token included in the request is invalid"},
     None, KmsCredentialsError, "aws_credentials"),
    (400, {}, "ExpiredTokenException:http://internal.amazon.com/coral/", KmsCredentialsError, "expire"),
    (400, {"__type": "ValidationException", "message": "bad attestation"}, None, KmsRequestError, "attestation"),
    (503, {"__type": "KMSInternalException"}, None, KmsUnavailableError, "retry"),
    (500, {}, None, KmsUnavailableError, "HTTP 500"),
])
def test_error_mapping_over_https(server, signer, status, body, header, cls, needle):
    server.forced = (status, body, header)
    _, rcpt = recipient(signer)
    with pytest.raises(cls) as exc:
        client(server).decrypt(key_id=KEY_ID, ciphertext_blob=b"blob", recipient=rcpt)
    assert needle in str(exc.value) and REGION in str(exc.value)


def test_answer_with_plaintext_or_without_envelope_is_refused(server, signer):
    _, rcpt = recipient(signer)
    server.forced = (200, {"KeyId": KEY_ARN, "CiphertextBlob": "AAAA", "Plaintext": "AAAA",
                           "CiphertextForRecipient": "AAAA"}, None)
    with pytest.raises(KmsRequestError):
        client(server).generate_data_key(key_id=KEY_ID, recipient=rcpt)
    server.forced = (200, {"KeyId": KEY_ARN, "CiphertextBlob": "AAAA"}, None)
    with pytest.raises(KmsUnavailableError):
        client(server).generate_data_key(key_id=KEY_ID, recipient=rcpt)


def test_tls_is_verified_against_the_bundle_and_the_kms_name(server, signer):
    _, rcpt = recipient(signer)
    with pytest.raises(KmsUnavailableError) as exc:  # default trust store: the test CA is unknown
        client(server, ca_bundle="").generate_data_key(key_id=KEY_ID, recipient=rcpt)
    assert "certificate verification" in str(exc.value)
    with pytest.raises(KmsUnavailableError):  # right CA, but the certificate is not for kms.eu-west-1
        client(server, region="eu-west-1").generate_data_key(key_id=KEY_ID, recipient=rcpt)
    assert server.requests == []


def test_unreachable_endpoint_names_the_vsock_proxy(signer):
    _, rcpt = recipient(signer)
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(KmsUnavailableError) as exc:
        AwsKmsClient(region=REGION, credentials=CREDS, connector=tcp_connector("127.0.0.1", port),
                     timeout_s=2.0).generate_data_key(key_id=KEY_ID, recipient=rcpt)
    assert "vsock-proxy" in str(exc.value)


def test_map_error_on_garbage_body():
    err = map_error(status=403, body=b"<html>", region=REGION, key_id=KEY_ID)
    assert isinstance(err, KmsRequestError) and "HTTP 403" in str(err)


def test_endpoints_and_region_are_checked():
    assert callable(connector_for("", REGION)) and callable(connector_for("vsock:3:8000", REGION))
    assert callable(connector_for("tcp:127.0.0.1:8443", REGION))
    for bad in ("vsock:x:1", "udp:1:2", "tcp::1", "vsock:3"):
        with pytest.raises(ConfigError):
            connector_for(bad, REGION)
    with pytest.raises(ConfigError):
        AwsKmsClient(region="kms.evil.com/", credentials=CREDS)


def _cli_spec(tmp_path, **ks):
    pki = test_pki(2)
    base = dict(sealed_key_path=str(tmp_path / "k.sealed"), kms_key_id=KEY_ID, kms_region="eu-west-1",
                attestation="nsm", kms_endpoint="vsock:3:8000")
    base.update(ks)
    return KeyServiceSpec(run=run_spec(parties=2), keyservice=keyservice_config(**base), client_ca_pem=pki.ca.cert_pem,
                          registry=key_service_registry(pki=pki, parties=2))


@pytest.mark.parametrize("change,needle", [
    (dict(kms_key_id=""), "kms_key_id"), (dict(kms_region=""), "kms_region"),
    (dict(attestation="development"), "attestation: nsm"), (dict(kms_endpoint="http://x"), "kms_endpoint"),
])
def test_cli_kms_client_refusals(tmp_path, change, needle):
    spec = dataclasses.replace(_cli_spec(tmp_path, **change), aws_credentials=CREDS)
    with pytest.raises(ConfigError) as exc:
        cli_kms_client(spec)
    assert needle in str(exc.value)


def test_cli_kms_client_uses_aws_kms_with_credentials_from_the_spec(tmp_path):
    spec = KeyServiceSpec.from_json(dataclasses.replace(_cli_spec(tmp_path), aws_credentials=CREDS).to_json())
    assert spec.aws_credentials == CREDS and "secret-example" not in repr(spec)
    assert isinstance(cli_kms_client(spec), AwsKmsClient)
    assert cli_kms_client(dataclasses.replace(spec, keyservice=keyservice_config())) is None  # nothing sealed
    expired = dataclasses.replace(spec, aws_credentials=dataclasses.replace(
        CREDS, expiration=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)))
    with pytest.raises(ConfigError, match="expired"):
        cli_kms_client(expired)


def test_cli_refuses_to_start_without_credentials(tmp_path):
    spec = _cli_spec(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "ppml_hybrid.keyservice"], input=json.dumps(spec.to_json()),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == ConfigError.exit_code
    assert "no AWS credentials" in proc.stderr and "aws_credentials" in proc.stderr
    assert READY not in proc.stdout and not (tmp_path / "k.sealed").exists()
