"""HTTP signatures: our draft-cavage signatures verify, and every way a request can be wrongly
signed is refused with the reason; RFC 9421 signatures made as Fedify and Mastodon make them
verify; a draft-cavage request built exactly as Mastodon builds one verifies."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms
from werkzeug.datastructures import Headers as WerkzeugHeaders

from shared.infrastructure.activitypub.keys import public_pem_of
from shared.infrastructure.activitypub.signatures import (
    IncomingRequest,
    SignatureError,
    VerifiedSignature,
    check_digest,
    content_digest_header,
    digest_header,
    host_header,
    sign_request,
    signature_key_id,
    verify_request,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
KEY_ID = "https://peer.example/users/alice#main-key"
INBOX = "https://blog.example/ap/actors/blog/inbox"
BODY = b'{"type":"Follow","actor":"https://peer.example/users/alice"}'


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def signed_post(
    key: rsa.RSAPrivateKey, url: str = INBOX, body: bytes = BODY, now: datetime = NOW
) -> IncomingRequest:
    headers = sign_request("POST", url, key_id=KEY_ID, private_key=key, body=body, now=now)
    headers["Content-Type"] = "application/activity+json"
    return IncomingRequest("POST", url, headers, body)


def cavage_sign(
    key: rsa.RSAPrivateKey,
    signed: list[tuple[str, str]],
    *,
    algorithm: str | None = "rsa-sha256",
    extra: str = "",
) -> str:
    """A Signature header over exactly ``signed`` (name, value) lines, written by hand."""
    base = "\n".join(f"{name}: {value}" for name, value in signed).encode()
    signature = base64.b64encode(key.sign(base, padding.PKCS1v15(), hashes.SHA256())).decode()
    names = " ".join(name for name, _ in signed)
    alg = f'algorithm="{algorithm}",' if algorithm else ""
    return f'keyId="{KEY_ID}",{alg}headers="{names}",{extra}signature="{signature}"'


# --- draft-cavage: our own signatures ----------------------------------------------------


def test_a_signed_post_verifies_and_names_its_key(key: rsa.RSAPrivateKey) -> None:
    request = signed_post(key)
    assert (
        request.headers["Digest"]
        == "SHA-256=" + base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    )
    assert 'headers="(request-target) host date digest"' in request.headers["signature"]
    assert 'algorithm="rsa-sha256"' in request.headers["Signature"]
    assert request.headers["host"] == "blog.example"
    assert request.headers["date"] == "Sun, 01 Jun 2025 12:00:00 GMT"
    assert signature_key_id(request) == KEY_ID
    assert verify_request(request, public_pem_of(key), now=NOW) == VerifiedSignature(
        key_id=KEY_ID, scheme="cavage"
    )


def test_a_signed_get_with_a_query_and_a_port_verifies(key: rsa.RSAPrivateKey) -> None:
    url = "http://blog.localhost:8001/ap/actors/blog/outbox?page=2"
    headers = sign_request("GET", url, key_id=KEY_ID, private_key=key, now=NOW)
    assert headers["Host"] == "blog.localhost:8001"
    assert "Digest" not in headers
    assert 'headers="(request-target) host date"' in headers["Signature"]
    request = IncomingRequest("GET", url, headers, b"")
    assert verify_request(request, public_pem_of(key), now=NOW).scheme == "cavage"


def test_the_host_header_leaves_out_default_ports() -> None:
    assert host_header("https://a.example:443/x") == "a.example"
    assert host_header("http://a.example:80/x") == "a.example"
    assert host_header("https://a.example:8443/x") == "a.example:8443"
    assert host_header("http://[::1]:8080/x") == "[::1]:8080"


def test_werkzeug_headers_are_read_case_insensitively(key: rsa.RSAPrivateKey) -> None:
    request = signed_post(key)
    werkzeug = WerkzeugHeaders(list(request.headers.items()))
    received = IncomingRequest("post", INBOX, werkzeug, BODY)
    assert received.headers["SIGNATURE"] == request.headers["signature"]
    assert verify_request(received, public_pem_of(key), now=NOW).key_id == KEY_ID


def test_another_key_does_not_verify(key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey) -> None:
    forged = signed_post(other_key)
    with pytest.raises(SignatureError, match="bad signature"):
        verify_request(forged, public_pem_of(key), now=NOW)


def test_a_13_hour_old_date_is_stale_but_a_wider_window_takes_it(
    key: rsa.RSAPrivateKey,
) -> None:
    request = signed_post(key, now=NOW - timedelta(hours=13))
    with pytest.raises(SignatureError, match="stale"):
        verify_request(request, public_pem_of(key), now=NOW)
    assert verify_request(request, public_pem_of(key), now=NOW, window=timedelta(hours=14))


def test_an_11_hour_old_date_is_within_the_window(key: rsa.RSAPrivateKey) -> None:
    request = signed_post(key, now=NOW - timedelta(hours=11))
    assert verify_request(request, public_pem_of(key), now=NOW).key_id == KEY_ID


def test_a_date_13_hours_ahead_is_refused(key: rsa.RSAPrivateKey) -> None:
    request = signed_post(key, now=NOW + timedelta(hours=13))
    with pytest.raises(SignatureError, match="future"):
        verify_request(request, public_pem_of(key), now=NOW)


def test_a_digest_that_does_not_match_the_body_is_refused(key: rsa.RSAPrivateKey) -> None:
    request = signed_post(key)
    headers = dict(request.headers.items())
    headers["digest"] = digest_header(b"something else")
    with pytest.raises(SignatureError, match=r"Digest .* does not match"):
        verify_request(IncomingRequest("POST", INBOX, headers, BODY), public_pem_of(key), now=NOW)


def test_an_altered_body_is_refused(key: rsa.RSAPrivateKey) -> None:
    request = signed_post(key)
    altered = IncomingRequest("POST", INBOX, request.headers, BODY.replace(b"Follow", b"Block"))
    with pytest.raises(SignatureError, match="does not match the body"):
        verify_request(altered, public_pem_of(key), now=NOW)


def test_an_altered_signed_header_is_refused(key: rsa.RSAPrivateKey) -> None:
    request = signed_post(key)
    headers = dict(request.headers.items())
    headers["date"] = format_datetime(NOW + timedelta(seconds=1), usegmt=True)
    with pytest.raises(SignatureError, match="bad signature"):
        verify_request(IncomingRequest("POST", INBOX, headers, BODY), public_pem_of(key), now=NOW)


def test_a_request_to_another_path_is_refused(key: rsa.RSAPrivateKey) -> None:
    request = signed_post(key)
    elsewhere = IncomingRequest(
        "POST", INBOX.replace("blog/inbox", "events/inbox"), request.headers, BODY
    )
    with pytest.raises(SignatureError, match="bad signature"):
        verify_request(elsewhere, public_pem_of(key), now=NOW)


def test_an_unsigned_request_is_refused(key: rsa.RSAPrivateKey) -> None:
    request = IncomingRequest("POST", INBOX, {"Host": "blog.example"}, BODY)
    with pytest.raises(SignatureError, match="not signed"):
        signature_key_id(request)
    with pytest.raises(SignatureError, match="not signed"):
        verify_request(request, public_pem_of(key), now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        'keyId="x",signature=',
        'keyId="x" signature="AAAA"',
        f'keyId="{KEY_ID}",headers="(request-target) host date"',
        'keyId="x",signature="not base64!!"',
    ],
)
def test_a_malformed_signature_header_is_refused(header: str) -> None:
    request = IncomingRequest("GET", INBOX, {"Signature": header}, b"")
    with pytest.raises(SignatureError, match=r"malformed|base64"):
        signature_key_id(request)


def test_an_unknown_algorithm_is_refused(key: rsa.RSAPrivateKey) -> None:
    date = format_datetime(NOW, usegmt=True)
    lines = [("(request-target)", "get /x"), ("host", "blog.example"), ("date", date)]
    headers = {
        "Host": "blog.example",
        "Date": date,
        "Signature": cavage_sign(key, lines, algorithm="hmac-sha256"),
    }
    with pytest.raises(SignatureError, match="unsupported signature algorithm 'hmac-sha256'"):
        verify_request(
            IncomingRequest("GET", "https://blog.example/x", headers), public_pem_of(key), now=NOW
        )


@pytest.mark.parametrize(
    ("left_out", "reason"),
    [
        ("host", "host"),
        ("date", "date"),
        ("(request-target)", r"\(request-target\)"),
        ("digest", "digest"),
    ],
)
def test_a_signature_must_cover_target_host_date_and_digest(
    key: rsa.RSAPrivateKey, left_out: str, reason: str
) -> None:
    date = format_datetime(NOW, usegmt=True)
    values = {
        "(request-target)": "post /ap/actors/blog/inbox",
        "host": "blog.example",
        "date": date,
        "digest": digest_header(BODY),
    }
    lines = [(name, value) for name, value in values.items() if name != left_out]
    headers = {"Host": "blog.example", "Date": date, "Digest": digest_header(BODY)}
    headers["Signature"] = cavage_sign(key, lines)
    with pytest.raises(SignatureError, match=f"does not cover required headers: .*{reason}"):
        verify_request(IncomingRequest("POST", INBOX, headers, BODY), public_pem_of(key), now=NOW)


def test_the_host_is_verified_as_received_with_or_without_port(key: rsa.RSAPrivateKey) -> None:
    """Mastodon signs ``host`` without the port: a request to blog.localhost:8001 whose Host
    line says ``blog.localhost`` verifies; the same signature under a Host with the port does
    not; a signature over host:port verifies when Host carries the port."""
    url = "http://blog.localhost:8001/ap/actors/blog/inbox"
    date = format_datetime(NOW, usegmt=True)

    def request(signed_host: str, received_host: str) -> IncomingRequest:
        lines = [
            ("(request-target)", "post /ap/actors/blog/inbox"),
            ("host", signed_host),
            ("date", date),
            ("digest", digest_header(BODY)),
        ]
        headers = {"Host": received_host, "Date": date, "Digest": digest_header(BODY)}
        headers["Signature"] = cavage_sign(key, lines)
        return IncomingRequest("POST", url, headers, BODY)

    pem = public_pem_of(key)
    assert verify_request(request("blog.localhost", "blog.localhost"), pem, now=NOW)
    assert verify_request(request("blog.localhost:8001", "blog.localhost:8001"), pem, now=NOW)
    with pytest.raises(SignatureError, match="bad signature"):
        verify_request(request("blog.localhost", "blog.localhost:8001"), pem, now=NOW)


def test_hs2019_with_created_instead_of_date(key: rsa.RSAPrivateKey) -> None:
    created = int(NOW.timestamp())

    def request(created: int) -> IncomingRequest:
        lines = [
            ("(request-target)", "get /ap/actors/blog"),
            ("host", "blog.example"),
            ("(created)", str(created)),
        ]
        signature = cavage_sign(key, lines, algorithm="hs2019", extra=f"created={created},")
        headers = {"Host": "blog.example", "Signature": signature}
        return IncomingRequest("GET", "https://blog.example/ap/actors/blog", headers)

    assert verify_request(request(created), public_pem_of(key), now=NOW).key_id == KEY_ID
    with pytest.raises(SignatureError, match="stale"):
        verify_request(request(created - 13 * 3600), public_pem_of(key), now=NOW)


def test_an_expired_signature_is_refused(key: rsa.RSAPrivateKey) -> None:
    date = format_datetime(NOW, usegmt=True)
    lines = [("(request-target)", "get /x"), ("host", "blog.example"), ("date", date)]
    expires = int((NOW - timedelta(minutes=1)).timestamp())
    headers = {
        "Host": "blog.example",
        "Date": date,
        "Signature": cavage_sign(key, lines, algorithm="hs2019", extra=f"expires={expires},"),
    }
    with pytest.raises(SignatureError, match="expired"):
        verify_request(
            IncomingRequest("GET", "https://blog.example/x", headers), public_pem_of(key), now=NOW
        )


def test_a_request_target_signed_without_its_query_is_accepted(key: rsa.RSAPrivateKey) -> None:
    """Mastodon and Fedify sign ``(request-target)`` as the path alone."""
    date = format_datetime(NOW, usegmt=True)
    lines = [("(request-target)", "get /outbox"), ("host", "blog.example"), ("date", date)]
    headers = {"Host": "blog.example", "Date": date, "Signature": cavage_sign(key, lines)}
    request = IncomingRequest("GET", "https://blog.example/outbox?page=1", headers)
    assert verify_request(request, public_pem_of(key), now=NOW).key_id == KEY_ID


def test_a_post_signed_as_mastodon_signs_it_verifies(key: rsa.RSAPrivateKey) -> None:
    """Built as Mastodon's Request#signature builds it (app/lib/request.rb): Host is the URL's
    host without the port, Date is httpdate, ``Digest: SHA-256=…``, and the signed headers are
    ``(request-target) host date digest content-type`` with algorithm rsa-sha256."""
    body = (
        b'{"@context":"https://www.w3.org/ns/activitystreams","id":"https://mastodon.example/'
        b'users/alice#follows/1","type":"Follow","actor":"https://mastodon.example/users/alice",'
        b'"object":"http://blog.localhost:8001/ap/actors/blog"}'
    )
    date = NOW.strftime("%a, %d %b %Y %H:%M:%S GMT")
    digest = "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    signed = [
        ("(request-target)", "post /ap/actors/blog/inbox"),
        ("host", "blog.localhost"),
        ("date", date),
        ("digest", digest),
        ("content-type", "application/activity+json"),
    ]
    string = "\n".join(f"{name}: {value}" for name, value in signed).encode()
    value = base64.b64encode(key.sign(string, padding.PKCS1v15(), hashes.SHA256())).decode()
    headers = WerkzeugHeaders(
        [
            ("Host", "blog.localhost"),
            ("User-Agent", "http.rb/5.1.1 (Mastodon/4.3.0; +https://mastodon.example/)"),
            ("Date", date),
            ("Accept-Encoding", "gzip"),
            ("Digest", digest),
            ("Content-Type", "application/activity+json"),
            (
                "Signature",
                'keyId="https://mastodon.example/users/alice#main-key",algorithm="rsa-sha256",'
                'headers="(request-target) host date digest content-type",'
                f'signature="{value}"',
            ),
        ]
    )
    request = IncomingRequest(
        "POST", "http://blog.localhost:8001/ap/actors/blog/inbox", headers, body
    )
    assert signature_key_id(request) == "https://mastodon.example/users/alice#main-key"
    assert (
        verify_request(request, public_pem_of(key), now=NOW + timedelta(minutes=3)).scheme
        == "cavage"
    )


def test_check_digest_accepts_sha512_and_ignores_unknown_algorithms() -> None:
    sha512 = base64.b64encode(hashlib.sha512(BODY).digest()).decode()
    check_digest({"Digest": f"MD5=xyz, SHA-512={sha512}"}, BODY)
    with pytest.raises(SignatureError, match="no SHA-256 or SHA-512"):
        check_digest({"Digest": "MD5=xyz"}, BODY)
    with pytest.raises(SignatureError, match="missing"):
        check_digest({}, BODY)


# --- RFC 9421 ----------------------------------------------------------------------------


@dataclass
class Message:
    """The request shape http-message-signatures signs: method, url, mutable headers."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


class Keys(HTTPSignatureKeyResolver):
    def __init__(self, private: rsa.RSAPrivateKey) -> None:
        self.private = private

    def resolve_private_key(self, key_id: str) -> rsa.RSAPrivateKey:
        return self.private


def rfc9421_post(
    key: rsa.RSAPrivateKey,
    *,
    created: datetime = NOW,
    algorithm: type[algorithms.HTTPSignatureAlgorithm] = algorithms.RSA_V1_5_SHA256,
    components: tuple[str, ...] = ("@method", "@target-uri"),
    body: bytes | None = BODY,
) -> Message:
    """Signed as Fedify signs a delivery: rsa-v1_5-sha256, @method @target-uri and
    content-digest (the library adds Content-Digest for the body), created, keyid."""
    message = Message(
        "POST", INBOX, {"Host": "blog.example", "Content-Type": "application/activity+json"}
    )
    signer = HTTPMessageSigner(signature_algorithm=algorithm, key_resolver=Keys(key))
    signer.sign(
        message,
        key_id=KEY_ID,
        created=created,
        label="sig1",
        covered_component_ids=components,
        body=body,
    )
    return message


def received(message: Message, body: bytes = BODY, method: str = "POST") -> IncomingRequest:
    return IncomingRequest(method, message.url, message.headers, body)


def test_an_rfc9421_signature_verifies(key: rsa.RSAPrivateKey) -> None:
    message = rfc9421_post(key)
    assert message.headers["Content-Digest"] == content_digest_header(BODY)
    assert '"content-digest"' in message.headers["Signature-Input"]
    request = received(message)
    assert signature_key_id(request) == KEY_ID
    assert verify_request(request, public_pem_of(key), now=NOW) == VerifiedSignature(
        key_id=KEY_ID, scheme="rfc9421"
    )


def test_an_rfc9421_rsa_pss_signature_verifies(key: rsa.RSAPrivateKey) -> None:
    message = rfc9421_post(key, algorithm=algorithms.RSA_PSS_SHA512)
    assert 'alg="rsa-pss-sha512"' in message.headers["Signature-Input"]
    assert verify_request(received(message), public_pem_of(key), now=NOW).scheme == "rfc9421"


def test_an_rfc9421_signature_covering_authority_and_path_verifies(
    key: rsa.RSAPrivateKey,
) -> None:
    message = rfc9421_post(key, components=("@method", "@authority", "@path"))
    assert verify_request(received(message), public_pem_of(key), now=NOW).key_id == KEY_ID


def test_an_rfc9421_signature_with_another_key_fails(
    key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(SignatureError, match="bad signature"):
        verify_request(received(rfc9421_post(other_key)), public_pem_of(key), now=NOW)


def test_a_tampered_rfc9421_request_fails(key: rsa.RSAPrivateKey) -> None:
    message = rfc9421_post(key)
    with pytest.raises(SignatureError, match="Content-Digest"):
        verify_request(received(message, body=BODY + b" "), public_pem_of(key), now=NOW)
    with pytest.raises(SignatureError, match="bad signature"):
        verify_request(received(message, method="PUT"), public_pem_of(key), now=NOW)
    moved = Message("POST", INBOX.replace("/blog/", "/events/"), message.headers)
    with pytest.raises(SignatureError, match="bad signature"):
        verify_request(received(moved), public_pem_of(key), now=NOW)


def test_an_rfc9421_signature_outside_the_window_fails(key: rsa.RSAPrivateKey) -> None:
    old = rfc9421_post(key, created=NOW - timedelta(hours=13))
    with pytest.raises(SignatureError, match="stale"):
        verify_request(received(old), public_pem_of(key), now=NOW)
    ahead = rfc9421_post(key, created=NOW + timedelta(hours=13))
    with pytest.raises(SignatureError, match="future"):
        verify_request(received(ahead), public_pem_of(key), now=NOW)


def test_an_rfc9421_signature_must_cover_method_target_and_digest(
    key: rsa.RSAPrivateKey,
) -> None:
    no_target = rfc9421_post(key, components=("@method", "@authority"))
    with pytest.raises(SignatureError, match="@target-uri"):
        verify_request(received(no_target), public_pem_of(key), now=NOW)
    no_method = rfc9421_post(key, components=("@target-uri",))
    with pytest.raises(SignatureError, match="@method"):
        verify_request(received(no_method), public_pem_of(key), now=NOW)
    no_digest = rfc9421_post(key, body=None)
    no_digest.headers["Content-Digest"] = content_digest_header(BODY)
    with pytest.raises(SignatureError, match="content-digest"):
        verify_request(received(no_digest), public_pem_of(key), now=NOW)


def test_an_rfc9421_signature_as_fedify_writes_it_verifies(key: rsa.RSAPrivateKey) -> None:
    """Fedify (sig/http.ts signRequestRfc9421) writes the headers by hand: label sig1,
    components "@method" "@target-uri" "@authority" "host" "date" "content-digest",
    parameters alg;keyid;created, base64 signature between colons."""
    url = "http://blog.localhost:8001/ap/actors/blog/inbox"
    created = int(NOW.timestamp())
    date = format_datetime(NOW, usegmt=True)
    digest = content_digest_header(BODY)
    components = ["@method", "@target-uri", "@authority", "host", "date", "content-digest"]
    values = {
        "@method": "POST",
        "@target-uri": url,
        "@authority": "blog.localhost:8001",
        "host": "blog.localhost:8001",
        "date": date,
        "content-digest": digest,
    }
    params = f'alg="rsa-v1_5-sha256";keyid="{KEY_ID}";created={created}'
    listed = " ".join(f'"{c}"' for c in components)
    base = "\n".join(
        [*(f'"{c}": {values[c]}' for c in components), f'"@signature-params": ({listed});{params}']
    )
    signature = base64.b64encode(key.sign(base.encode(), padding.PKCS1v15(), hashes.SHA256()))
    headers: Mapping[str, str] = {
        "host": "blog.localhost:8001",
        "date": date,
        "content-type": "application/activity+json",
        "content-digest": digest,
        "signature-input": f"sig1=({listed});{params}",
        "signature": f"sig1=:{signature.decode()}:",
    }
    request = IncomingRequest("POST", url, headers, BODY)
    assert signature_key_id(request) == KEY_ID
    assert verify_request(request, public_pem_of(key), now=NOW).scheme == "rfc9421"


def test_an_unknown_rfc9421_algorithm_is_refused(key: rsa.RSAPrivateKey) -> None:
    message = rfc9421_post(key)
    message.headers["Signature-Input"] = message.headers["Signature-Input"].replace(
        "rsa-v1_5-sha256", "hmac-sha256"
    )
    with pytest.raises(SignatureError, match="unsupported signature algorithm 'hmac-sha256'"):
        verify_request(received(message), public_pem_of(key), now=NOW)


def test_a_malformed_signature_input_is_refused() -> None:
    request = IncomingRequest("POST", INBOX, {"Signature-Input": "sig1=(", "Signature": "x"}, BODY)
    with pytest.raises(SignatureError, match="malformed Signature-Input"):
        signature_key_id(request)
    no_key = IncomingRequest(
        "POST", INBOX, {"Signature-Input": 'sig1=("@method");created=1', "Signature": "sig1=:AA==:"}
    )
    with pytest.raises(SignatureError, match="keyid is required"):
        signature_key_id(no_key)
