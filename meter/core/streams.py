"""Redis stream entries as meter reads them. Pure."""

from __future__ import annotations


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A Redis stream id ("ms-seq") as a tuple that orders like the stream."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def text(value: bytes | str) -> str:
    """A Redis reply as text: bytes from a client without `decode_responses`, else as is."""
    return value.decode() if isinstance(value, bytes) else value
