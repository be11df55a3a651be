"""The client's webhook verification against the server's signing: two implementations, each
the other's oracle."""

from __future__ import annotations

import orjson
import pytest

from meter.webhooks import signing
from meter_client import webhooks

BODY = orjson.dumps({"id": "evt_1", "type": "usage.limit_reached", "created": 1, "data": {}})
NOW = 1_800_000_000


def test_a_server_signature_verifies_in_the_client() -> None:
    secret = signing.new_secret()
    header = signing.header(BODY, [secret], NOW)
    assert webhooks.verify(BODY, header, secret, now=NOW + 10)["id"] == "evt_1"


def test_during_a_rotation_either_secret_verifies() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    header = signing.header(BODY, [new, old], NOW)
    for secrets in (old, new, [new], ["whsec_other", old]):
        webhooks.verify(BODY, header, secrets, now=NOW)
    with pytest.raises(webhooks.WebhookSignatureError, match="no signature matches"):
        webhooks.verify(BODY, header, "whsec_other", now=NOW)


@pytest.mark.parametrize(
    ("payload", "header_of", "now", "match"),
    [
        (BODY + b" ", lambda h: h, NOW, "no signature matches"),  # body changed
        (BODY, lambda h: h, NOW + 301, "tolerance"),  # too old: a replay
        (BODY, lambda h: h, NOW - 301, "tolerance"),  # from the future
        (BODY, lambda h: h.replace(f"t={NOW}", f"t={NOW + 1}"), NOW, "no signature matches"),
        (BODY, lambda h: h.split(",")[0], NOW, "no `v1=`"),
        (BODY, lambda h: h.split(",")[1], NOW, "no timestamp"),
        (BODY, lambda h: "t=abc," + h.split(",")[1], NOW, "not an integer"),
        (BODY, lambda h: "", NOW, "no Meter-Signature"),
    ],
)
def test_bad_signatures_are_refused(
    payload: bytes, header_of: object, now: int, match: str
) -> None:
    secret = signing.new_secret()
    header = header_of(signing.header(BODY, [secret], NOW))  # type: ignore[operator]
    with pytest.raises(webhooks.WebhookSignatureError, match=match):
        webhooks.verify(payload, header, secret, now=now)
    # The server's own verification agrees.
    if header:
        with pytest.raises(signing.SignatureError):
            signing.verify(payload, header, [secret], now=now)


def test_the_client_signature_matches_the_server_one_byte_for_byte() -> None:
    # An independent oracle: the HMAC computed here by hand.
    import hashlib
    import hmac

    secret = "whsec_fixed"
    expected = hmac.new(secret.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert signing.header(BODY, [secret], NOW) == f"t={NOW},v1={expected}"
    assert webhooks.verify(BODY, f"t={NOW},v1={expected}", secret, now=NOW)["type"] == (
        "usage.limit_reached"
    )
