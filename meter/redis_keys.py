"""Every Redis key name and Lua script meter uses, in one place.

Keys of one shard share a hash tag (`{s07}`) so that the shard's stream and its dedupe keys live
in one Redis Cluster slot and one Lua call can touch them all atomically.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

from meter.names import key_part


def shard_of(tenant: str, event_id: str, shards: int) -> int:
    """Shard = hash(tenant, event id) mod shards. Stable across processes and restarts (crc32).

    Changing METER_SHARDS remaps ids: do it only with no retries in flight
    (docs/configuration.md).
    """
    return zlib.crc32(event_id.encode(), tenant_crc(tenant)) % shards


@functools.lru_cache(maxsize=1024)
def tenant_crc(tenant: str) -> int:
    """crc32 of `tenant` NUL, the running value `shard_of` continues over an id (crc32 of a
    concatenation is crc32 of the second part seeded with the first's)."""
    return zlib.crc32(f"{tenant}\x00".encode())


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
        """Marks an accepted event id for METER_DEDUPE_WINDOW after its acceptance. The tenant is
        escaped (meter/names.py): it ends at the first `:`, whatever the id holds."""
        return f"{self.prefix}:{{s{shard:02d}}}:dedupe:{key_part(tenant)}:{event_id}"

    def dedupe_prefixes(self, tenant: str, shards: int) -> tuple[str, ...]:
        """Per shard, `dedupe(shard, tenant, id)` without the id: ingest builds them once per
        tenant, not once per event."""
        return _dedupe_prefixes(self.prefix, tenant, shards)

    def alert_touches(self) -> str:
        """The (tenant, customer, meter)s the aggregator just folded usage of, for the alert
        evaluator (docs/alerts.md). A hint only: the evaluator's sweep covers a lost entry."""
        return f"{self.prefix}:alerts:touches"

    def limits(self, tenant: str) -> str:
        """The tenant's hard-limit blocks (meter/limits.py): a hash, field `customer\x1fmeter`,
        value JSON {"rule": id, "until_ms": ms}."""
        return f"{self.prefix}:limits:{key_part(tenant)}"

    def pattern(self) -> str:
        """Glob over every key under this prefix (tests and `meter dev` reset use it)."""
        return f"{self.prefix}:*"


@functools.lru_cache(maxsize=1024)
def _dedupe_prefixes(prefix: str, tenant: str, shards: int) -> tuple[str, ...]:
    keys = Keys(prefix)
    return tuple(keys.dedupe(shard, tenant, "") for shard in range(shards))


# The stream entry field that flags an event which may repeat one whose dedupe key has expired
# (`may_repeat_forgotten`); absent on every other entry. The usage API checks a flagged entry
# against usage_event_keys before counting it as pending (meter/usage/pending.py).
MAY_REPEAT_FIELD = b"r"

# Slack for the clocks of serve hosts and Redis and for a commit's own delay (socket timeout
# 5 s, WAIT 2 s at most): `may_repeat_forgotten` stays true of every forgotten retry under it.
_CLOCK_SLACK_MS = 60_000


def recent_horizon_ms(dedupe_window_s: float, future_tolerance_s: float) -> int:
    """How far back from now an explicit timestamp must lie for its event to maybe repeat one
    whose dedupe key expired (see `may_repeat_forgotten`)."""
    return int((dedupe_window_s - future_tolerance_s) * 1000) - _CLOCK_SLACK_MS


def may_repeat_forgotten(timestamp_ms: int, now_ms: int, horizon_ms: int) -> bool:
    """Whether an event accepted now may repeat an accepted event whose dedupe key expired.

    A retry carries its event's timestamp t. Its first copy was accepted at some A ≥ t − future
    tolerance, and its key lived until A + window; so a retry Redis forgot was accepted after
    t − tolerance + window, i.e. t ≤ now − horizon. A timestamp left to default is "now" at
    each try, so it proves nothing: such an event (t = now) is flagged too.
    """
    return timestamp_ms <= now_ms - horizon_ms or timestamp_ms == now_ms


# The group committer's one call per flush.
# KEYS = [stream_1 .. stream_s, dedupe_1 .. dedupe_n], the events grouped by stream in order
# ARGV = [s, ttl, flags, count_1 .. count_s, payload_1 .. payload_n]
# count_j events go to stream_j; flags holds one byte per event, '1' when it may repeat an event
# whose dedupe key expired. Two arguments per event (its key and payload), not four: packing
# and parsing arguments is a large share of a flush on both ends (docs/performance.md).
# Per event: SET dedupe NX EX ttl (METER_DEDUPE_WINDOW), and only if it was set, XADD the payload
# to its stream, with MAY_REPEAT_FIELD when its flag is '1'.
# Dedupe and append happen inside one script, and a script runs atomically (and is replicated
# and AOF-logged as a unit): a crash of Redis or of the caller leaves the whole call applied or
# none of it — never a claimed id without its event. Against a single Redis one call carries
# every shard of a flush; against Redis Cluster the committer sends one call per shard (s = 1),
# whose keys share the shard's hash tag and so one slot.
# Returns [length of stream_1 .. stream_s, status_1 .. status_n]; 1 = appended, 0 = duplicate.
INGEST_SCRIPT = """
local s = tonumber(ARGV[1])
local ttl = ARGV[2]
local flags = ARGV[3]
local payloads = 3 + s
local out = {}
local i = 0
for j = 1, s do
  local stream = KEYS[j]
  for _ = 1, tonumber(ARGV[3 + j]) do
    i = i + 1
    if redis.call('SET', KEYS[s + i], '1', 'NX', 'EX', ttl) then
      if string.byte(flags, i) == 49 then
        redis.call('XADD', stream, '*', 'e', ARGV[payloads + i], 'r', '1')
      else
        redis.call('XADD', stream, '*', 'e', ARGV[payloads + i])
      end
      out[s + i] = 1
    else
      out[s + i] = 0
    end
  end
  out[j] = redis.call('XLEN', stream)
end
return out
"""


# meter/limits.py `block`: sets the field KEYS[1][ARGV[1]] to ARGV[3] (the block of rule ARGV[2]
# until ARGV[4] ms) unless it holds the same rule's block until a later or equal time: an
# evaluator that read an earlier period and writes late never shortens the current period's
# block. Another rule's block is replaced. Returns 1 if it wrote.
BLOCK_LIMIT_SCRIPT = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then
    local ok, doc = pcall(cjson.decode, raw)
    if ok and type(doc) == 'table' and tostring(doc['rule']) == ARGV[2]
        and tonumber(doc['until_ms']) and tonumber(doc['until_ms']) >= tonumber(ARGV[4]) then
        return 0
    end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# meter/limits.py `clear`: deletes the field KEYS[1][ARGV[1]] only if its block is rule ARGV[2]'s
# and ends at or before ARGV[3] ms (the end of the period being cleared): a rule lifting its block
# never lifts another rule's, and a late lift of one period never lifts the next period's block.
# Returns 1 if it deleted.
CLEAR_LIMIT_SCRIPT = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local ok, doc = pcall(cjson.decode, raw)
if ok and type(doc) == 'table' and tostring(doc['rule']) == ARGV[2]
    and tonumber(doc['until_ms']) and tonumber(doc['until_ms']) <= tonumber(ARGV[3]) then
    return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""
