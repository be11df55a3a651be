"""Bodies in their Content-Encoding (meter/bodies.py): decoded within the limit, or a client
error naming the encoding."""

from __future__ import annotations

import gzip
import zlib

import pytest

from meter.bodies import UnsupportedEncoding, decode
from meter.errors import InvalidRequest, PayloadTooLarge

DOC = b'{"id": "e1", "customer": "c", "meter": "m"}'


@pytest.mark.parametrize(
    ("encoding", "raw"),
    [
        ("", DOC),
        ("identity", DOC),
        ("gzip", gzip.compress(DOC, mtime=0)),
        ("GZIP ", gzip.compress(DOC, mtime=0)),
        ("x-gzip", gzip.compress(DOC, mtime=0)),
        ("deflate", zlib.compress(DOC)),
    ],
)
def test_decodes(encoding: str, raw: bytes) -> None:
    assert decode(raw, encoding, 1024) == DOC


def test_gzip_members_back_to_back_are_one_body() -> None:
    assert decode(gzip.compress(DOC[:10]) + gzip.compress(DOC[10:]), "gzip", 1024) == DOC


@pytest.mark.parametrize(
    ("encoding", "raw"),
    [
        ("gzip", DOC),
        ("gzip", gzip.compress(DOC, mtime=0)[:-12]),  # cut short
        ("gzip", gzip.compress(DOC, mtime=0) + b"junk"),
        ("deflate", b"\x00\x01\x02"),
        ("deflate", zlib.compress(DOC)[:-3]),
    ],
)
def test_a_body_not_in_its_encoding_is_a_client_error(encoding: str, raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as raised:
        decode(raw, encoding, 1024)
    assert raised.value.param == "Content-Encoding"
    assert encoding in raised.value.message


def test_a_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"0" * 50_000_000)
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLarge):
        decode(bomb, "gzip", 1024 * 1024)


def test_an_encoding_we_do_not_take_is_415() -> None:
    with pytest.raises(UnsupportedEncoding) as raised:
        decode(b"x", "br", 1024)
    assert raised.value.status == 415
