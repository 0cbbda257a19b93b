"""AWS Signature Version 4 (header form), standard library only.

Steps (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html):
(1) canonical request = method, canonical URI, canonical query, canonical headers (lower-case
names, trimmed values with inner runs of spaces collapsed, sorted), signed header names, hex
SHA-256 of the payload; (2) string to sign = ``AWS4-HMAC-SHA256``, ``x-amz-date``, credential
scope ``date/region/service/aws4_request``, hex SHA-256 of the canonical request; (3) signing key
= HMAC chain ``"AWS4"+secret -> date -> region -> service -> "aws4_request"``; (4) signature =
hex HMAC(signing key, string to sign); (5) ``Authorization: AWS4-HMAC-SHA256 Credential=AKID/scope,
SignedHeaders=..., Signature=...``. Temporary credentials add ``x-amz-security-token`` (signed).

:class:`AwsCredentials` never shows its secret or token in ``repr`` and cannot be pickled.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Tuple
from urllib.parse import quote

from ppml_hybrid.errors import ConfigError

ALGORITHM = "AWS4-HMAC-SHA256"
_SPACES = re.compile(r" +")


@dataclass(frozen=True)
class AwsCredentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: Optional[str] = field(default=None, repr=False)  # temporary (instance role / STS) credentials
    expiration: Optional[dt.datetime] = None  # as IMDS reports it; None = unknown / long-term key

    def __post_init__(self) -> None:
        if not self.access_key_id or not self.secret_access_key:
            raise ConfigError("AWS credentials need AccessKeyId and SecretAccessKey")

    def __getstate__(self) -> None:
        raise TypeError("AwsCredentials hold a secret and cannot be pickled")

    @classmethod
    def from_json(cls, raw: Mapping) -> "AwsCredentials":
        """IMDS ``iam/security-credentials/<role>`` JSON (``AccessKeyId``, ``SecretAccessKey``, ``Token``,
        ``Expiration``); STS's ``SessionToken`` is accepted for ``Token``. Other keys are ignored."""
        if not isinstance(raw, Mapping):
            raise ConfigError("aws_credentials must be a JSON object (the parent's IMDS role credentials)")
        exp = raw.get("Expiration")
        expiration = None
        if exp:
            try:
                expiration = dt.datetime.fromisoformat(str(exp).replace("Z", "+00:00"))
            except ValueError:
                raise ConfigError("aws_credentials.Expiration is not an ISO-8601 time") from None
            if expiration.tzinfo is None:
                expiration = expiration.replace(tzinfo=dt.timezone.utc)
        return cls(access_key_id=str(raw.get("AccessKeyId") or ""),
                   secret_access_key=str(raw.get("SecretAccessKey") or ""),
                   session_token=(raw.get("Token") or raw.get("SessionToken") or None), expiration=expiration)

    def to_json(self) -> dict:
        out = {"AccessKeyId": self.access_key_id, "SecretAccessKey": self.secret_access_key}
        if self.session_token:
            out["Token"] = self.session_token
        if self.expiration is not None:
            out["Expiration"] = self.expiration.strftime("%Y-%m-%dT%H:%M:%SZ")
        return out

    def expired(self, now: dt.datetime) -> bool:
        return self.expiration is not None and now >= self.expiration


@dataclass(frozen=True)
class SignedRequest:
    headers: Tuple[Tuple[str, str], ...]  # what to send: the caller's headers + host, x-amz-date, token, authorization
    canonical_request: str
    string_to_sign: str
    signature: str
    authorization: str


def amz_date(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _encode(s: str) -> str:
    return quote(s, safe="-_.~")


def canonical_uri(path: str) -> str:
    return quote(path or "/", safe="/-_.~")


def canonical_query(query: Iterable[Tuple[str, str]]) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted((_encode(k), _encode(v)) for k, v in query))


def canonical_headers(headers: Iterable[Tuple[str, str]]) -> Tuple[str, str]:
    """(canonical header block, signed header names); repeated names join their values with ','."""
    merged: dict = {}
    for name, value in headers:
        merged.setdefault(name.strip().lower(), []).append(_SPACES.sub(" ", str(value).strip()))
    names = sorted(merged)
    block = "".join(f"{n}:{','.join(merged[n])}\n" for n in names)
    return block, ";".join(names)


def canonical_request(*, method: str, path: str, query: Iterable[Tuple[str, str]], headers: Iterable[Tuple[str, str]],
                      payload_sha256: str) -> Tuple[str, str]:
    block, signed = canonical_headers(headers)
    lines = [method.upper(), canonical_uri(path), canonical_query(query), block, signed, payload_sha256]
    return "\n".join(lines), signed


def credential_scope(*, date: str, region: str, service: str) -> str:
    return f"{date}/{region}/{service}/aws4_request"


def string_to_sign(*, amz_datetime: str, scope: str, canonical: str) -> str:
    return "\n".join([ALGORITHM, amz_datetime, scope, hashlib.sha256(canonical.encode()).hexdigest()])


def signing_key(*, secret_access_key: str, date: str, region: str, service: str) -> bytes:
    k = ("AWS4" + secret_access_key).encode()
    for part in (date, region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def sign_request(*, method: str, host: str, path: str = "/", query: Iterable[Tuple[str, str]] = (),
                 headers: Iterable[Tuple[str, str]] = (), body: bytes = b"", credentials: AwsCredentials,
                 region: str, service: str, now: dt.datetime) -> SignedRequest:
    """Sign every header given plus ``host``, ``x-amz-date`` (and ``x-amz-security-token``)."""
    stamp = amz_date(now)
    all_headers = [(n, v) for n, v in headers] + [("host", host), ("x-amz-date", stamp)]
    if credentials.session_token:
        all_headers.append(("x-amz-security-token", credentials.session_token))
    query = tuple(query)
    creq, signed = canonical_request(method=method, path=path, query=query, headers=all_headers,
                                     payload_sha256=hashlib.sha256(body).hexdigest())
    scope = credential_scope(date=stamp[:8], region=region, service=service)
    sts = string_to_sign(amz_datetime=stamp, scope=scope, canonical=creq)
    key = signing_key(secret_access_key=credentials.secret_access_key, date=stamp[:8], region=region, service=service)
    signature = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    authorization = (f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, SignedHeaders={signed}, "
                     f"Signature={signature}")
    return SignedRequest(headers=tuple(all_headers) + (("authorization", authorization),), canonical_request=creq,
                         string_to_sign=sts, signature=signature, authorization=authorization)
