"""Every Redis key name and Lua script meter uses, in one place.

Keys of one shard share a hash tag (`{s07}`) so that the shard's stream and its dedupe keys live
in one Redis Cluster slot and one Lua call can touch them all atomically.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from meter.names import key_part


def shard_of(tenant: str, event_id: str, shards: int) -> int:
    """Shard = hash(tenant, event id) mod shards. Stable across processes and restarts (crc32).

    Changing METER_SHARDS remaps ids: do it only with no retries in flight
    (docs/configuration.md).
    """
    return zlib.crc32(f"{tenant}\x00{event_id}".encode()) % shards


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix (`meter` in production, a per-test prefix in tests)."""

    prefix: str

    def tag(self, shard: int) -> str:
        return f"{{s{shard:02d}}}"

    def stream(self, shard: int) -> str:
        """The shard's event stream, read by the aggregator."""
        return f"{self.prefix}:{self.tag(shard)}:events"

    def dedupe(self, shard: int, tenant: str, event_id: str) -> str:
        """Marks an accepted event id; lives until the event can no longer be accepted. The
        tenant is escaped (meter/names.py): it ends at the first `:`, whatever the id holds."""
        return f"{self.prefix}:{{s{shard:02d}}}:dedupe:{key_part(tenant)}:{event_id}"

    def pattern(self) -> str:
        """Glob over every key under this prefix (tests and `meter dev` reset use it)."""
        return f"{self.prefix}:*"


# The group committer's one call per flush.
# KEYS = [stream_1 .. stream_s, dedupe_1 .. dedupe_n]
# ARGV = [s, stream index_1, ttl_1, payload_1, .., stream index_n, ttl_n, payload_n]
# Per event: SET dedupe NX EX ttl, and only if it was set, XADD the payload to its stream.
# Dedupe and append happen inside one script, and a script runs atomically (and is replicated
# and AOF-logged as a unit): a crash of Redis or of the caller leaves the whole call applied or
# none of it — never a claimed id without its event. Against a single Redis one call carries
# every shard of a flush; against Redis Cluster the committer sends one call per shard (s = 1),
# whose keys share the shard's hash tag and so one slot.
# Returns [length of stream_1 .. stream_s, status_1 .. status_n]; 1 = appended, 0 = duplicate.
INGEST_SCRIPT = """
local s = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS - s do
  local a = 3 * i - 1
  if redis.call('SET', KEYS[s + i], '1', 'NX', 'EX', ARGV[a + 1]) then
    redis.call('XADD', KEYS[tonumber(ARGV[a])], '*', 'e', ARGV[a + 2])
    out[s + i] = 1
  else
    out[s + i] = 0
  end
end
for j = 1, s do
  out[j] = redis.call('XLEN', KEYS[j])
end
return out
"""
