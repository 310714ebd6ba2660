"""Signatures: the reference test vectors, tampering, and the REST request round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol import signatures as sig
from gateway.protocol.errors import AuthenticationFailed

KEY, SECRET = "278d425bdf160c739803", "7ad3773142a6692b25b8"


@pytest.mark.parametrize(
    ("message", "digest"),
    [
        ("1234.1234:private-foobar",
         "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"),
        ('1234.1234::user::{"id":"12345"}',
         "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"),
        ('1234.1234:presence-foobar:{"user_id":10,"user_info":{"name":"Mr. Pusher"}}',
         "afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c"),
    ],
)
def test_reference_vectors(message: str, digest: str) -> None:
    assert sig.sign(SECRET, message) == digest
    assert sig.token_matches(KEY, SECRET, f"{KEY}:{digest}", message)


def test_strings_to_sign() -> None:
    assert sig.channel_string("1.2", "private-a") == "1.2:private-a"
    presence = sig.channel_string("1.2", "presence-a", '{"user_id":1}')
    assert presence == '1.2:presence-a:{"user_id":1}'
    assert sig.user_string("1.2", '{"id":"3"}') == '1.2::user::{"id":"3"}'


@pytest.mark.parametrize(
    "token",
    [
        None,
        42,
        "",
        "no-colon-at-all",
        f"wrong-key:{sig.sign(SECRET, '1.1:private-x')}",
        f"{KEY}:{'0' * 64}",
        f"{KEY}:",
        f"{KEY}:{sig.sign(SECRET, '1.1:private-x')}extra",
        f"{KEY}:ünïcode",
    ],
)
def test_bad_tokens_are_refused(token: object) -> None:
    assert not sig.token_matches(KEY, SECRET, token, "1.1:private-x")


@given(socket_a=st.from_regex(r"\d{1,10}\.\d{1,10}", fullmatch=True),
       socket_b=st.from_regex(r"\d{1,10}\.\d{1,10}", fullmatch=True),
       channel=st.from_regex(r"private-[-a-zA-Z0-9_=@,.;]{1,40}", fullmatch=True))
def test_a_token_is_bound_to_its_socket(socket_a: str, socket_b: str, channel: str) -> None:
    token = sig.auth_token(KEY, SECRET, sig.channel_string(socket_a, channel))
    assert sig.token_matches(KEY, SECRET, token, sig.channel_string(socket_a, channel))
    if socket_a != socket_b:
        assert not sig.token_matches(KEY, SECRET, token, sig.channel_string(socket_b, channel))


def test_reference_rest_vector() -> None:
    body = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
    assert sig.body_md5(body) == "ec365a775a4cd0599faeb73354201b6f"
    params = {"auth_key": KEY, "auth_timestamp": "1353088179", "auth_version": "1.0",
              "body_md5": sig.body_md5(body)}
    expected = ("POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179"
                "&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f")
    assert sig.rest_string_to_sign("POST", "/apps/3/events", params) == expected
    assert sig.sign(SECRET, expected) == (
        "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c")


def _verify(method: str, path: str, params: dict[str, str], body: bytes, now: float) -> None:
    sig.verify_rest_request(key=KEY, secret=SECRET, method=method, path=path, params=params,
                            body=body, now=now, window=600)


query_values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(
    method=st.sampled_from(["GET", "POST"]),
    path=st.from_regex(r"/apps/[0-9]{1,5}/[a-z_]{1,12}", fullmatch=True),
    extra=st.dictionaries(st.from_regex(r"[a-z_]{1,10}", fullmatch=True), query_values,
                          max_size=4),
    body=st.binary(max_size=200),
)
def test_rest_round_trip(method: str, path: str, extra: dict[str, str], body: bytes) -> None:
    extra = {k: v for k, v in extra.items() if not k.startswith("auth_") and k != "body_md5"}
    params = sig.sign_rest_request(KEY, SECRET, method, path, extra, body, timestamp=1_000_000)
    _verify(method, path, params, body, now=1_000_000)


def _signed(body: bytes = b'{"a":1}', ts: int = 1_000_000) -> dict[str, str]:
    return sig.sign_rest_request(KEY, SECRET, "POST", "/apps/1/events", {}, body, ts)


def test_rest_tampered_body_is_refused() -> None:
    with pytest.raises(AuthenticationFailed, match="body_md5"):
        _verify("POST", "/apps/1/events", _signed(), b'{"a":2}', now=1_000_000)


def test_rest_signature_that_does_not_cover_the_body_is_refused() -> None:
    # Signed as if bodiless, then sent with a body: the server signs body_md5 in regardless.
    params = _signed(body=b"")
    with pytest.raises(AuthenticationFailed, match="signature"):
        _verify("POST", "/apps/1/events", params, b'{"a":1}', now=1_000_000)


@pytest.mark.parametrize("skew", [601, -601, 10_000])
def test_rest_timestamp_outside_window_is_refused(skew: int) -> None:
    with pytest.raises(AuthenticationFailed, match="Timestamp expired"):
        _verify("POST", "/apps/1/events", _signed(), b'{"a":1}', now=1_000_000 + skew)


def test_rest_timestamp_at_window_edge_is_accepted() -> None:
    _verify("POST", "/apps/1/events", _signed(), b'{"a":1}', now=1_000_600)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"auth_key": "other"}, "auth_key"),
        ({"auth_version": "2.0"}, "auth_version"),
        ({"auth_timestamp": "soon"}, "auth_timestamp"),
        ({"auth_signature": "0" * 64}, "signature"),
        ({"auth_signature": ""}, "auth_signature"),
    ],
)
def test_rest_bad_parameters_are_refused(change: dict[str, str], match: str) -> None:
    params = {**_signed(), **change}
    with pytest.raises(AuthenticationFailed, match=match):
        _verify("POST", "/apps/1/events", params, b'{"a":1}', now=1_000_000)


def test_rest_path_is_part_of_the_signature() -> None:
    with pytest.raises(AuthenticationFailed):
        _verify("POST", "/apps/2/events", _signed(), b'{"a":1}', now=1_000_000)


def test_python_sdk_get_with_empty_body_md5() -> None:
    # The Python SDK sends body_md5 of the empty body on GET requests.
    params = sig.sign_rest_request(KEY, SECRET, "GET", "/apps/1/channels", {}, b"", 1_000_000)
    params["body_md5"] = sig.body_md5(b"")
    params["auth_signature"] = sig.sign(
        SECRET, sig.rest_string_to_sign("GET", "/apps/1/channels", params))
    _verify("GET", "/apps/1/channels", params, b"", now=1_000_000)
