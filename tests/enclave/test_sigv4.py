"""SigV4 against AWS's published Signature Version 4 test-suite vectors.

Source: the aws-sig-v4-test-suite (formerly https://docs.aws.amazon.com/general/latest/gr/signature-v4-test-suite.html),
credentials AKIDEXAMPLE / wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, region us-east-1, service
``service``, 20150830T123600Z. The signatures below are as AWS's SDK for JavaScript v3 carries the
suite in ``@aws-sdk/signature-v4`` ``suite.fixture`` (cases get-vanilla, post-x-www-form-urlencoded,
get-vanilla-query-order-key-case, get-header-value-trim, post-sts-header-before), the
string-to-sign hashes as in the suite's ``.sts`` files (bb5797..., 42a5e5...), and
get-vanilla-with-session-token from awslabs/aws-c-auth ``tests/aws-signing-test-suite/v4/``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import pickle

import pytest

from ppml_hybrid.errors import ConfigError
from ppml_hybrid.keyservice.sealing.sigv4 import AwsCredentials, sign_request, signing_key

AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
WHEN = dt.datetime(2015, 8, 30, 12, 36, 0, tzinfo=dt.timezone.utc)
HOST = "example.amazonaws.com"
SCOPE = "20150830/us-east-1/service/aws4_request"
EMPTY = hashlib.sha256(b"").hexdigest()
STS_TOKEN = ("AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRq"
             "TflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75Y"
             "U9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9K"
             "SYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==")


def sign(method="GET", token=None, **kw):
    return sign_request(method=method, host=HOST, credentials=AwsCredentials(AKID, SECRET, token), region="us-east-1",
                        service="service", now=WHEN, **kw)


def test_get_vanilla():
    s = sign()
    assert s.canonical_request == f"GET\n/\n\nhost:{HOST}\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{EMPTY}"
    assert s.string_to_sign == ("AWS4-HMAC-SHA256\n20150830T123600Z\n" + SCOPE +
                                "\nbb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63")
    assert s.signature == "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    assert s.authorization == (f"AWS4-HMAC-SHA256 Credential={AKID}/{SCOPE}, SignedHeaders=host;x-amz-date, "
                               "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
    assert dict(s.headers)["x-amz-date"] == "20150830T123600Z"


def test_post_x_www_form_urlencoded():
    s = sign("POST", headers=[("Content-Type", "application/x-www-form-urlencoded")], body=b"Param1=value1")
    assert s.canonical_request == (
        "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\n"
        "x-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n"
        "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e")
    assert s.string_to_sign.split("\n") == ["AWS4-HMAC-SHA256", "20150830T123600Z", SCOPE,
                                            "42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281"]
    assert s.authorization == (f"AWS4-HMAC-SHA256 Credential={AKID}/{SCOPE}, "
                               "SignedHeaders=content-type;host;x-amz-date, "
                               "Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a")


@pytest.mark.parametrize("case,kw,want", [
    ("get-vanilla-query-order-key-case", dict(query=[("Param2", "value2"), ("Param1", "value1")]),
     "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    ("get-header-value-trim", dict(headers=[("My-Header1", "value1"), ("My-Header2", '"a   b   c"')]),
     "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
    ("post-sts-header-before", dict(method="POST", token=STS_TOKEN),
     "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"),
    ("get-vanilla-with-session-token", dict(token="6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"),
     "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"),
])
def test_more_suite_cases(case, kw, want):
    s = sign(**kw)
    assert s.signature == want, case
    if "token" in kw:
        assert "SignedHeaders=host;x-amz-date;x-amz-security-token," in s.authorization
        assert dict(s.headers)["x-amz-security-token"] == kw["token"]


def test_signing_key_chain_depends_on_every_part():
    k = signing_key(secret_access_key=SECRET, date="20150830", region="us-east-1", service="service")
    assert len(k) == 32
    for other in (dict(date="20150831"), dict(region="us-west-2"), dict(service="kms")):
        args = dict(secret_access_key=SECRET, date="20150830", region="us-east-1", service="service")
        args.update(other)
        assert signing_key(**args) != k


def test_credentials_hide_secret_and_parse_imds_json():
    c = AwsCredentials.from_json({"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": "ASIAEXAMPLE",
                                  "SecretAccessKey": "s3cr3t", "Token": "t0k3n", "Expiration": "2030-01-01T00:00:00Z"})
    assert "s3cr3t" not in repr(c) and "t0k3n" not in repr(c)
    assert c.session_token == "t0k3n" and not c.expired(WHEN)
    assert c.expired(dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc))
    assert AwsCredentials.from_json(c.to_json()) == c
    with pytest.raises(TypeError):
        pickle.dumps(c)
    for bad in ({"AccessKeyId": "A"}, {"SecretAccessKey": "s"}, [], {"AccessKeyId": "A", "SecretAccessKey": "s",
                                                                     "Expiration": "soon"}):
        with pytest.raises(ConfigError):
            AwsCredentials.from_json(bad)
