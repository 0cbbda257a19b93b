"""The real AWS KMS client behind :class:`~.kms.KmsClient` (JSON 1.1 over HTTPS, SigV4; stdlib + ``ssl``).

Request: ``POST /`` to ``kms.<region>.amazonaws.com`` with ``Content-Type: application/x-amz-json-1.1``,
``X-Amz-Target: TrentService.GenerateDataKey`` / ``TrentService.Decrypt`` and a JSON body carrying
``Recipient: {KeyEncryptionAlgorithm: RSAES_OAEP_SHA_256, AttestationDocument: <base64>}``; signed
with SigV4 (:mod:`.sigv4`, service ``kms``). Answer: base64 ``CiphertextBlob`` / ``CiphertextForRecipient``
(CMS EnvelopedData opened by :mod:`.hazmat_recipient`); a ``Plaintext`` in the answer is refused
(KMS ignored the Recipient), and so is an answer without ``CiphertextForRecipient``.

Transport: a *connector* returns a connected stream socket; TLS is always ours, end to end, with
server name ``kms.<region>.amazonaws.com`` and certificate verification against ``ca_bundle``
(the image's system bundle, ``/etc/ssl/certs/ca-certificates.crt``) or the default trust store.
Inside the enclave the connector is AF_VSOCK to the parent (CID 3) port 8000, where
``vsock-proxy`` forwards the bytes to kms.<region>.amazonaws.com:443: the parent sees only TLS.
Endpoints: ``""`` (direct TCP to the regional endpoint, outside an enclave), ``vsock:CID:PORT``,
``tcp:HOST:PORT`` (e.g. a local socat relay).

Credentials: the parent's instance-role credentials (IMDS is not reachable from an enclave),
handed to K in the launch spec over vsock (``aws_credentials``; see enclave/README.md), kept in
memory only. They alone cannot use the key: the key policy demands matching attestation PCRs.

Errors: KMS's ``{"__type", "message"}`` map to typed :class:`~.errors.KmsError` subclasses whose
message says what to check (key policy PCR conditions, credentials / clock, key id / region).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import http.client
import json
import logging
import re
import socket
import ssl
from typing import Callable, Mapping, Optional

from ppml_hybrid.errors import ConfigError
from ppml_hybrid.keyservice.sealing.errors import (
    KmsAccessDeniedError, KmsCredentialsError, KmsError, KmsInvalidCiphertextError, KmsKeyError, KmsRequestError,
    KmsUnavailableError,
)
from ppml_hybrid.keyservice.sealing.kms import DecryptResult, GenerateDataKeyResult, Recipient
from ppml_hybrid.keyservice.sealing.sigv4 import AwsCredentials, sign_request

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-amz-json-1.1"
SERVICE = "kms"
PARENT_CID = 3
MAX_RESPONSE_BYTES = 1 << 20
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")

Connector = Callable[[float], socket.socket]  # timeout_s -> connected stream socket (TLS is layered on top)


def endpoint_host(region: str) -> str:
    return f"kms.{region}.amazonaws.com"


def tcp_connector(host: str, port: int) -> Connector:
    return lambda timeout_s: socket.create_connection((host, port), timeout=timeout_s)


def vsock_connector(cid: int, port: int) -> Connector:
    def connect(timeout_s: float) -> socket.socket:
        family = getattr(socket, "AF_VSOCK", None)
        if family is None:
            raise OSError("AF_VSOCK is not available on this platform")
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.settimeout(timeout_s)
            s.connect((cid, port))
        except BaseException:
            s.close()
            raise
        return s

    return connect


def connector_for(endpoint: str, region: str) -> Connector:
    """``""`` -> kms.<region>.amazonaws.com:443; ``vsock:CID:PORT``; ``tcp:HOST:PORT``."""
    if not endpoint:
        return tcp_connector(endpoint_host(region), 443)
    kind, _, rest = endpoint.partition(":")
    host, _, port = rest.rpartition(":")
    try:
        if kind == "vsock":
            return vsock_connector(int(host), int(port))
        if kind == "tcp" and host:
            return tcp_connector(host, int(port))
    except ValueError:
        pass
    raise ConfigError(f"keyservice.kms_endpoint {endpoint!r}: use '' (direct), 'vsock:CID:PORT' or 'tcp:HOST:PORT'")


def tls_context(ca_bundle: str = "") -> ssl.SSLContext:
    """Verifying client context: ``ca_bundle`` (PEM file) or the default trust store; TLS >= 1.2."""
    try:
        ctx = ssl.create_default_context(cafile=ca_bundle or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"keyservice.kms_ca_bundle {ca_bundle!r} cannot be loaded: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class _Connection(http.client.HTTPSConnection):
    """HTTPS whose TCP leg comes from a connector; SNI and the verified name stay the KMS host."""

    def __init__(self, *, host: str, connector: Connector, context: ssl.SSLContext, timeout_s: float) -> None:
        super().__init__(host, 443, timeout=timeout_s, context=context)
        self._connector = connector

    def connect(self) -> None:
        raw = self._connector(self.timeout)
        try:
            self.sock = self._context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


_HINT_ACCESS = ("check the KMS key policy's kms:RecipientAttestation:PCR0/1/2/8 values against enclave/out/pcrs.json "
                "of the image that is running (every rebuild changes them: aws kms put-key-policy), that the enclave "
                "is not in debug mode, and that the parent role's IAM policy (enclave/iam-parent-policy.json) allows "
                "kms:GenerateDataKey/kms:Decrypt on this key")
_HINT_CREDENTIALS = ("check the aws_credentials the parent put into the launch spec (the instance role's from IMDS, "
                     "with their Token; they expire), that keyservice.kms_region is the key's region, and the "
                     "enclave's clock (SigV4 allows 5 minutes of skew)")
_HINT_KEY = ("check keyservice.kms_key_id (key ARN, key id or alias/...) and keyservice.kms_region: the key must "
             "exist in that region, be Enabled and be a SYMMETRIC_DEFAULT encryption key")
_HINT_CIPHERTEXT = "the sealed file's CiphertextBlob does not belong to this KMS key (or was altered)"
_HINT_REQUEST = ("KMS rejected the request as malformed; a Recipient attestation document that does not verify "
                 "(not NSM-signed, expired) is one cause")
_HINT_UNAVAILABLE = "KMS is throttling or failing; retry later"

_ERRORS = {
    "AccessDeniedException": (KmsAccessDeniedError, _HINT_ACCESS),
    "UnrecognizedClientException": (KmsCredentialsError, _HINT_CREDENTIALS),
    "InvalidSignatureException": (KmsCredentialsError, _HINT_CREDENTIALS),
    "IncompleteSignatureException": (KmsCredentialsError, _HINT_CREDENTIALS),
    "IncompleteSignature": (KmsCredentialsError, _HINT_CREDENTIALS),
    "MissingAuthenticationTokenException": (KmsCredentialsError, _HINT_CREDENTIALS),
    "MissingAuthenticationToken": (KmsCredentialsError, _HINT_CREDENTIALS),
    "ExpiredTokenException": (KmsCredentialsError, _HINT_CREDENTIALS),
    "ExpiredToken": (KmsCredentialsError, _HINT_CREDENTIALS),
    "InvalidClientTokenId": (KmsCredentialsError, _HINT_CREDENTIALS),
    "SignatureDoesNotMatch": (KmsCredentialsError, _HINT_CREDENTIALS),
    "NotFoundException": (KmsKeyError, _HINT_KEY),
    "DisabledException": (KmsKeyError, _HINT_KEY),
    "KMSInvalidStateException": (KmsKeyError, _HINT_KEY),
    "InvalidKeyUsageException": (KmsKeyError, _HINT_KEY),
    "KeyUnavailableException": (KmsKeyError, _HINT_KEY),
    "InvalidArnException": (KmsKeyError, _HINT_KEY),
    "InvalidCiphertextException": (KmsInvalidCiphertextError, _HINT_CIPHERTEXT),
    "IncorrectKeyException": (KmsInvalidCiphertextError, _HINT_CIPHERTEXT),
    "KMSInternalException": (KmsUnavailableError, _HINT_UNAVAILABLE),
    "DependencyTimeoutException": (KmsUnavailableError, _HINT_UNAVAILABLE),
    "ThrottlingException": (KmsUnavailableError, _HINT_UNAVAILABLE),
    "LimitExceededException": (KmsUnavailableError, _HINT_UNAVAILABLE),
}


def map_error(*, status: int, body: bytes, error_type_header: str = "", region: str = "", key_id: str = "") -> KmsError:
    """KMS's error answer -> a typed error naming the AWS type, its message and what to check."""
    kind, message = "", ""
    try:
        raw = json.loads(body.decode() or "{}")
        if isinstance(raw, dict):
            kind = str(raw.get("__type") or "")
            message = str(raw.get("message") or raw.get("Message") or "")
    except (ValueError, UnicodeDecodeError):
        pass
    kind = (kind or error_type_header.split(":")[0]).rpartition("#")[2].strip() or f"HTTP {status}"
    cls, hint = _ERRORS.get(kind, (None, ""))
    if cls is None:
        cls, hint = (KmsUnavailableError, _HINT_UNAVAILABLE) if status >= 500 else (KmsRequestError, _HINT_REQUEST)
    where = f" (key {key_id!r}, region {region})" if key_id or region else ""
    return cls(f"KMS {kind}: {message[:300] or 'no message'}{where}; {hint}")


class AwsKmsClient:
    """``GenerateDataKey`` / ``Decrypt`` with ``Recipient`` against AWS KMS (a :class:`~.kms.KmsClient`)."""

    __slots__ = ("_clock", "_connector", "_context", "_credentials", "_host", "_region", "_timeout_s")

    def __init__(self, *, region: str, credentials: AwsCredentials, connector: Optional[Connector] = None,
                 ca_bundle: str = "", context: Optional[ssl.SSLContext] = None, timeout_s: float = 30.0,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> None:
        if not _REGION.fullmatch(region or ""):
            raise ConfigError(f"keyservice.kms_region {region!r} is not an AWS region name (e.g. eu-west-1)")
        self._region = region
        self._host = endpoint_host(region)
        self._credentials = credentials
        self._connector = connector or tcp_connector(self._host, 443)
        self._context = context or tls_context(ca_bundle)
        self._timeout_s = timeout_s
        self._clock = clock

    def __repr__(self) -> str:
        return f"AwsKmsClient({self._host})"

    def __getstate__(self) -> None:
        raise TypeError("AwsKmsClient holds credentials and cannot be pickled")

    def generate_data_key(self, *, key_id: str, recipient: Recipient) -> GenerateDataKeyResult:
        out = self._call("GenerateDataKey", {"KeyId": key_id, "KeySpec": "AES_256",
                                             "Recipient": _recipient_json(recipient)}, key_id=key_id)
        return GenerateDataKeyResult(key_id=_str(out, "KeyId"), ciphertext_blob=_b64(out, "CiphertextBlob"),
                                     ciphertext_for_recipient=_b64(out, "CiphertextForRecipient"))

    def decrypt(self, *, key_id: str, ciphertext_blob: bytes, recipient: Recipient) -> DecryptResult:
        out = self._call("Decrypt", {"KeyId": key_id, "CiphertextBlob": base64.b64encode(ciphertext_blob).decode(),
                                     "Recipient": _recipient_json(recipient)}, key_id=key_id)
        return DecryptResult(key_id=_str(out, "KeyId"), ciphertext_for_recipient=_b64(out, "CiphertextForRecipient"))

    def _call(self, operation: str, payload: Mapping, *, key_id: str) -> dict:
        now = self._clock()
        if self._credentials.expired(now):
            raise KmsCredentialsError("the AWS credentials expired at "
                                      f"{self._credentials.expiration:%Y-%m-%dT%H:%M:%SZ}; {_HINT_CREDENTIALS}")
        body = json.dumps(payload, separators=(",", ":")).encode()
        signed = sign_request(method="POST", host=self._host, path="/", body=body, credentials=self._credentials,
                              region=self._region, service=SERVICE, now=now,
                              headers=[("content-type", CONTENT_TYPE), ("x-amz-target", f"TrentService.{operation}")])
        conn = _Connection(host=self._host, connector=self._connector, context=self._context, timeout_s=self._timeout_s)
        try:
            conn.request("POST", "/", body=body, headers=dict(signed.headers))
            resp = conn.getresponse()
            raw = resp.read(MAX_RESPONSE_BYTES + 1)
            status, error_type = resp.status, resp.getheader("x-amzn-ErrorType", "")
        except ssl.SSLCertVerificationError as exc:
            raise KmsUnavailableError(f"TLS to {self._host} failed certificate verification ({exc.verify_message}); "
                                      "check keyservice.kms_ca_bundle (the image's CA bundle) and that "
                                      "keyservice.kms_endpoint leads to KMS") from None
        except (OSError, http.client.HTTPException) as exc:
            raise KmsUnavailableError(f"cannot reach KMS {self._host}: {type(exc).__name__}: {exc}; inside the enclave "
                                      "check that the parent runs vsock-proxy (enclave/run.sh) for this region and "
                                      "keyservice.kms_endpoint") from None
        finally:
            conn.close()
        if len(raw) > MAX_RESPONSE_BYTES:
            raise KmsUnavailableError(f"KMS {operation}: answer larger than {MAX_RESPONSE_BYTES} bytes")
        if status != 200:
            raise map_error(status=status, body=raw, error_type_header=error_type, region=self._region, key_id=key_id)
        try:
            out = json.loads(raw.decode())
        except (ValueError, UnicodeDecodeError):
            raise KmsUnavailableError(f"KMS {operation}: the answer is not JSON") from None
        if not isinstance(out, dict):
            raise KmsUnavailableError(f"KMS {operation}: the answer is not a JSON object")
        if out.get("Plaintext") is not None:
            raise KmsRequestError(f"KMS {operation} answered with Plaintext: it ignored the Recipient; refusing")
        log.info("KMS %s for an attested recipient (%s)", operation, self._host)
        return out


def _recipient_json(recipient: Recipient) -> dict:
    return {"KeyEncryptionAlgorithm": recipient.key_encryption_algorithm,
            "AttestationDocument": base64.b64encode(recipient.attestation_document).decode()}


def _str(out: Mapping, name: str) -> str:
    v = out.get(name)
    if not isinstance(v, str) or not v:
        raise KmsUnavailableError(f"KMS answer lacks {name}")
    return v


def _b64(out: Mapping, name: str) -> bytes:
    try:
        v = base64.b64decode(_str(out, name), validate=True)
    except (binascii.Error, ValueError):
        raise KmsUnavailableError(f"KMS answer's {name} is not base64") from None
    if not v:
        raise KmsUnavailableError(f"KMS answer's {name} is empty")
    return v


def from_config(*, keyservice, credentials: Optional[AwsCredentials],
                clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> AwsKmsClient:
    """The client ``python -m ppml_hybrid.keyservice`` uses when ``keyservice.sealed_key_path`` is set.

    Refuses (ConfigError) without a key id, a region, credentials, with expired credentials, or with
    development attestation (AWS KMS accepts only NSM-signed Recipient documents; the attesting fake
    KMS is for tests and development and is passed in-process only).
    """
    if not keyservice.kms_key_id:
        raise ConfigError("keyservice.sealed_key_path is set but keyservice.kms_key_id is empty (the KMS key ARN or "
                          "alias/... that seals K's secret key)")
    if not keyservice.kms_region:
        raise ConfigError("keyservice.kms_region is empty: the region of the KMS key (e.g. eu-west-1)")
    if credentials is None:
        raise ConfigError("no AWS credentials: K needs the parent instance role's credentials in the launch spec as "
                          "aws_credentials {AccessKeyId, SecretAccessKey, Token} (enclave/run.sh adds them from IMDS; "
                          "IMDS is not reachable from inside the enclave); refusing to start")
    if credentials.expired(clock()):
        raise ConfigError("the aws_credentials in the launch spec have expired; restart through enclave/run.sh to "
                          "pass fresh instance-role credentials")
    if keyservice.attestation != "nsm":
        raise ConfigError("the AWS KMS client needs keyservice.attestation: nsm (KMS accepts only NSM-signed Recipient "
                          "attestation documents); the attesting fake KMS is for tests and development only")
    return AwsKmsClient(region=keyservice.kms_region, credentials=credentials,
                        connector=connector_for(keyservice.kms_endpoint, keyservice.kms_region),
                        ca_bundle=keyservice.kms_ca_bundle, timeout_s=keyservice.kms_timeout_s, clock=clock)
