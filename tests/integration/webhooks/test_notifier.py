"""The notifier end to end, against a local receiver: signed, at least once, retried, never two
senders of one delivery at once, endpoints disabled after failing for long, secrets rotated."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import socket
import sys
from collections import Counter

import asyncpg
import orjson
import pytest

from meter.config import Settings
from meter.webhooks import endpoints, events, signing, store
from notifier import egress
from notifier.worker import Notifier, lease_seconds
from tests.harness import failing_first, lost_connection_errors, terminate_others

from .conftest import Clock, Receiver, add_endpoint, closed_port_url


async def enqueue(db: asyncpg.Connection, subject: str, tenant: str = "acme") -> str:
    data = {"customer": "c-1", "subject": subject}
    return await events.enqueue(db, tenant, events.LIMIT_REACHED, subject, data)


async def delivery_states(db: asyncpg.Connection) -> list[tuple[str, int]]:
    rows = await db.fetch("SELECT status, attempts FROM webhook_deliveries ORDER BY created_at")
    return [(r["status"], r["attempts"]) for r in rows]


async def fan_out_all(db: asyncpg.Connection, notifier: Notifier) -> None:
    """Step 1 until every event is fanned out (one another transaction holds waits for it)."""
    while await store.events_not_fanned_out(db):
        await notifier.fan_out()
        await asyncio.sleep(0.02)


async def run_out_leases(db: asyncpg.Connection) -> None:
    """What waiting out every lease does: leases are on Postgres's clock, which a test cannot
    move, so their ends are moved back instead."""
    await db.execute(
        "UPDATE webhook_deliveries SET lease_until = now() - interval '1 second'"
        " WHERE lease_until IS NOT NULL"
    )


async def test_an_event_is_delivered_once_signed(
    db: asyncpg.Connection, nsettings: Settings, receiver: Receiver, clock: Clock
) -> None:
    hook = await add_endpoint(db, receiver.url, clock())
    event_id = await enqueue(db, "s-1")
    async with Notifier(nsettings, clock=clock) as notifier:
        assert await notifier.once() == 1
        assert await notifier.once() == 0  # nothing twice
    [got] = receiver.received
    now = clock().timestamp()
    signing.verify(got.body, got.signature, [hook.secret], now=now)
    doc = got.event
    assert doc["id"] == event_id
    assert doc["type"] == "usage.limit_reached"
    assert doc["tenant"] == "acme"
    assert doc["data"] == {"customer": "c-1", "subject": "s-1"}
    assert await delivery_states(db) == [("succeeded", 1)]
    assert notifier.metrics.deliveries.labels("succeeded")._value.get() == 1
    registry = notifier.metrics.registry
    assert registry.get_sample_value("meter_notifier_delivery_latency_seconds_count") == 1


async def test_other_tenants_and_unsubscribed_types_get_nothing(
    db: asyncpg.Connection, nsettings: Settings, receiver: Receiver, clock: Clock
) -> None:
    await add_endpoint(db, receiver.url, clock(), types=(events.LIMIT_CLEARED,))
    await enqueue(db, "s-1")  # limit_reached: not subscribed
    await enqueue(db, "s-2", tenant="beta")
    cleared = await events.enqueue(db, "acme", events.LIMIT_CLEARED, "s-3", {})
    async with Notifier(nsettings, clock=clock) as notifier:
        await notifier.once()
    assert receiver.ids() == [cleared]


async def test_a_receiver_down_gets_it_once_back(
    db: asyncpg.Connection, nsettings: Settings, receiver: Receiver, clock: Clock
) -> None:
    hook = await add_endpoint(db, closed_port_url(), clock())
    event_id = await enqueue(db, "s-1")
    receiver.answers = [500]
    async with Notifier(nsettings, clock=clock) as notifier:
        await notifier.once()  # connection refused
        assert await delivery_states(db) == [("pending", 1)]
        await store.update(db, "acme", hook.id, url=receiver.url)
        clock.advance(1.0)  # past the capped backoff
        await notifier.once()  # 500
        assert await delivery_states(db) == [("pending", 2)]
        clock.advance(1.0)
        await notifier.once()  # 200
        clock.advance(1.0)
        await notifier.once()
    assert receiver.ids() == [event_id, event_id]
    assert await delivery_states(db) == [("succeeded", 3)]
    [row] = await store.deliveries(db, "acme", hook.id, limit=10)
    log = store.delivery_doc(row)["attempt_log"]
    assert [a["status_code"] for a in log] == [None, 500, 200]
    assert "ClientConnectorError" in log[0]["error"]
    assert log[1]["error"] == "HTTP 500"
    assert notifier.metrics.attempts.labels("error")._value.get() == 1
    assert notifier.metrics.attempts.labels("5xx")._value.get() == 1


async def test_a_redirect_is_not_followed_and_fails(
    db: asyncpg.Connection, nsettings: Settings, receiver: Receiver, clock: Clock
) -> None:
    await add_endpoint(db, receiver.url.replace("/hook", "/moved"), clock())
    await enqueue(db, "s-1")
    async with Notifier(nsettings, clock=clock) as notifier:
        await notifier.once()
    assert receiver.received == []
    assert await delivery_states(db) == [("pending", 1)]


async def test_retries_stop_after_the_window(
    db: asyncpg.Connection, nsettings: Settings, receiver: Receiver, clock: Clock
) -> None:
    receiver.status = 503
    await add_endpoint(db, receiver.url, clock())
    await enqueue(db, "s-1")
    s = nsettings.replace(notifier_retry_for_s=5.0, notifier_disable_after_s=86400.0)
    async with Notifier(s, clock=clock) as notifier:
        for _ in range(12):
            await notifier.once()
            clock.advance(1.0)
    [(status, attempts)] = await delivery_states(db)
    assert status == "failed"
    assert 5 <= attempts <= 12
    assert len(receiver.received) == attempts
    assert notifier.metrics.deliveries.labels("failed")._value.get() == 1


def notify_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "METER_DATABASE_URL": settings.database_url,
        "METER_NOTIFIER_TIMEOUT": "2s",
        "METER_NOTIFIER_PRIVATE_URLS": "1",
        "METER_LOG_LEVEL": "warning",
    }


async def test_a_notifier_killed_after_sending_sends_again_with_the_same_id(
    db: asyncpg.Connection, nsettings: Settings, receiver: Receiver, clock: Clock
) -> None:
    hook = await add_endpoint(db, receiver.url, clock())
    event_id = await enqueue(db, "s-1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "notifier",
        "notify",
        "--once",
        "--fault",
        "after_send:1",
        env=notify_env(nsettings),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await proc.wait() == -signal.SIGKILL
    # Sent, not recorded: still pending, its claim held until the lease runs out.
    assert receiver.ids() == [event_id]
    assert await delivery_states(db) == [("pending", 1)]
    async with Notifier(nsettings, clock=clock) as notifier:
        assert await notifier.once() == 0  # leased: nobody sends it meanwhile
        await run_out_leases(db)
        clock.advance(60)  # the subprocess scheduled it on the real clock, after this one's start
        assert await notifier.once() == 1
    assert receiver.ids() == [event_id, event_id]
    assert await delivery_states(db) == [("succeeded", 2)]
    first, second = receiver.received
    assert first.body == second.body  # the same event; a receiver dedupes on its id
    signing.verify(second.body, second.signature, [hook.secret], now=clock().timestamp())


async def test_two_notifiers_never_send_one_delivery_twice(
    db: asyncpg.Connection, nsettings: Settings, receiver: Receiver, clock: Clock
) -> None:
    receiver.delay = 0.05
    await add_endpoint(db, receiver.url, clock())
    await add_endpoint(db, receiver.url, clock())
    ids = [await enqueue(db, f"s-{i}") for i in range(15)]
    s = nsettings.replace(notifier_batch_size=4, notifier_concurrency=4)
    async with Notifier(s, clock=clock) as a, Notifier(s, clock=clock) as b:
        done = await asyncio.gather(a.once(), b.once())
    assert sum(done) == 30
    assert done[0] > 0
    assert done[1] > 0
    assert Counter(receiver.ids()) == dict.fromkeys(ids, 2)  # once per endpoint
    assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") == 30
    assert {st for st, _ in await delivery_states(db)} == {"succeeded"}
    assert {n for _, n in await delivery_states(db)} == {1}


async def test_a_claim_is_leased_for_every_send_of_its_batch(
    db: asyncpg.Connection, nsettings: Settings, receiver: Receiver, clock: Clock
) -> None:
    # One send at a time: the 50th claimed may wait for 49 sends of up to 10 s each first.
    s = nsettings.replace(notifier_batch_size=50, notifier_concurrency=1, notifier_timeout_s=10.0)
    await add_endpoint(db, receiver.url, clock())
    await enqueue(db, "s-1")
    async with Notifier(s, clock=clock) as notifier:
        await fan_out_all(db, notifier)
        assert len(await notifier.claim()) == 1
    held = await db.fetchval(
        "SELECT extract(epoch FROM lease_until - now())::float8 FROM webhook_deliveries"
    )
    assert lease_seconds(s) == 50 * 10.0 + 30.0
    assert lease_seconds(s) - 30.0 < held <= lease_seconds(s)


async def test_a_notifier_whose_clock_runs_ahead_leaves_a_leased_delivery_alone(
    db: asyncpg.Connection, nsettings: Settings, receiver: Receiver, clock: Clock
) -> None:
    await add_endpoint(db, receiver.url, clock())
    await enqueue(db, "s-1")
    ahead = Clock()
    ahead.advance(86400.0)  # a host whose clock is a day fast
    async with Notifier(nsettings, clock=clock) as a, Notifier(nsettings, clock=ahead) as b:
        await fan_out_all(db, a)
        assert len(await a.claim()) == 1
        assert await b.claim() == []  # a's lease holds on Postgres's clock
        await run_out_leases(db)
        assert len(await b.claim()) == 1
    assert await delivery_states(db) == [("pending", 2)]


async def test_an_event_of_a_transaction_that_commits_late_is_not_skipped(
    db: asyncpg.Connection,
    database_url: str,
    nsettings: Settings,
    receiver: Receiver,
    clock: Clock,
) -> None:
    await add_endpoint(db, receiver.url, clock())
    slow = await asyncpg.connect(database_url)
    try:
        tx = slow.transaction()
        await tx.start()
        early = await enqueue(slow, "early")  # smaller seq, committed last
        late = await enqueue(db, "late")
        async with Notifier(nsettings, clock=clock) as notifier:
            await notifier.once(settle_s=0.2)
            assert receiver.ids() == [late]  # committed: it does not wait for the other
            await tx.commit()
            await notifier.once()
    finally:
        await slow.close()
    assert receiver.ids() == [late, early]


async def test_a_long_transaction_elsewhere_on_the_server_holds_nothing_back(
    db: asyncpg.Connection, pg_url: str, nsettings: Settings, receiver: Receiver, clock: Clock
) -> None:
    """A pg_dump, or another database's batch job, keeps a transaction open for hours: the
    oldest transaction of the server must not be what a webhook waits for."""
    await add_endpoint(db, receiver.url, clock())
    other = await asyncpg.connect(pg_url)  # another database of the same server
    try:
        tx = other.transaction()
        await tx.start()
        await other.fetchval("SELECT pg_current_xact_id()")  # it holds an xid from now on
        sent = await enqueue(db, "s-1")
        async with Notifier(nsettings, clock=clock) as notifier:
            assert await notifier.once(settle_s=0.5) == 1
        await tx.rollback()
    finally:
        await other.close()
    assert receiver.ids() == [sent]


async def test_an_endpoint_failing_for_long_is_disabled_then_enabled(
    db: asyncpg.Connection, nsettings: Settings, receiver: Receiver, clock: Clock
) -> None:
    receiver.status = 500
    hook = await add_endpoint(db, receiver.url, clock())
    await enqueue(db, "s-1")
    async with Notifier(nsettings, clock=clock) as notifier:
        # Failing for less than disable_after (600 s): still enabled, however many attempts.
        for _ in range(8):
            await notifier.once()
            clock.advance(1.0)
        row = await db.fetchrow("SELECT status FROM webhook_endpoints WHERE id = $1", hook.id)
        assert row is not None
        assert row["status"] == "enabled"
        clock.advance(600.0)
        await notifier.once()
        row = await db.fetchrow(
            "SELECT status, disabled_reason FROM webhook_endpoints WHERE id = $1", hook.id
        )
        assert row is not None
        assert row["status"] == "disabled"
        assert "every delivery failed since" in row["disabled_reason"]
        assert notifier.metrics.disablings._value.get() == 1
        # Disabled: new events get no delivery, pending ones are not attempted.
        sent = len(receiver.received)
        await enqueue(db, "s-2")
        clock.advance(5.0)
        await notifier.once()
        assert len(receiver.received) == sent
        assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") == 1
        assert notifier.metrics.endpoints_disabled._value.get() == 1
        # Enabled again: the pending delivery resumes, new events fan out again.
        receiver.status = 200
        await store.update(db, "acme", hook.id, disabled=False)
        third = await enqueue(db, "s-3")
        await notifier.once()
    assert receiver.ids()[-2:].count(third) == 1
    assert [s for s, _ in await delivery_states(db)] == ["succeeded", "succeeded"]


async def endpoint_state(db: asyncpg.Connection, endpoint: str) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT status, failing_since, consecutive_failures FROM webhook_endpoints WHERE id = $1",
        endpoint,
    )
    assert row is not None
    return row


async def test_one_dead_delivery_disables_its_endpoint_when_its_streak_is_old_enough(
    db: asyncpg.Connection, nsettings: Settings, clock: Clock
) -> None:
    # Retries stop as the streak would reach disable_after: its first failure came after the
    # delivery was created, so the last one lands before the streak is that old.
    s = nsettings.replace(notifier_retry_for_s=600.0, notifier_disable_after_s=600.0)
    hook = await add_endpoint(db, closed_port_url(), clock())
    await enqueue(db, "s-1")
    async with Notifier(s, clock=clock) as notifier:
        await fan_out_all(db, notifier)
        clock.advance(5.0)
        while (await delivery_states(db))[0][0] == "pending":
            await notifier.once()
            clock.advance(1.0)  # the capped backoff: due again each time
        first_failure = (await endpoint_state(db, hook.id))["failing_since"]
        assert clock() - first_failure < dt.timedelta(seconds=600)
        assert (await endpoint_state(db, hook.id))["status"] == "enabled"
        # No attempt left to fail: the clock alone brings the streak to 600 s.
        clock.now = first_failure + dt.timedelta(seconds=600)
        await notifier.once()
    assert (await endpoint_state(db, hook.id))["status"] == "disabled"
    assert notifier.metrics.disablings._value.get() == 1


async def test_a_2xx_that_lost_its_claim_still_ends_the_failure_streak(
    db: asyncpg.Connection, nsettings: Settings, receiver: Receiver, clock: Clock
) -> None:
    receiver.answers = [500]
    hook = await add_endpoint(db, receiver.url, clock())
    await enqueue(db, "s-1")
    async with Notifier(nsettings, clock=clock) as a, Notifier(nsettings, clock=clock) as b:
        await a.once()
        assert (await endpoint_state(db, hook.id))["consecutive_failures"] == 1
        clock.advance(1.0)
        (stale,) = await a.claim()
        await run_out_leases(db)
        assert len(await b.claim()) == 1  # a's claim ran out; b owns the delivery now
        await a.deliver(stale)  # 2xx, fenced off: b's attempt decides the delivery
    assert await delivery_states(db) == [("pending", 3)]
    state = await endpoint_state(db, hook.id)
    assert state["failing_since"] is None
    assert state["consecutive_failures"] == 0


async def test_rotation_signs_with_both_secrets_then_only_the_new(
    db: asyncpg.Connection, nsettings: Settings, receiver: Receiver, clock: Clock
) -> None:
    hook = await add_endpoint(db, receiver.url, clock())
    rotated = await store.rotate(db, "acme", hook.id, 3600, clock())
    assert rotated is not None
    await enqueue(db, "s-1")
    async with Notifier(nsettings, clock=clock) as notifier:
        await notifier.once()
        clock.advance(3601)
        await enqueue(db, "s-2")
        await notifier.once()
    during, after = receiver.received
    now = clock().timestamp()
    _, signatures = signing.parse(during.signature)
    assert len(signatures) == 2
    for secret in (hook.secret, rotated.secret):
        signing.verify(during.body, during.signature, [secret], now=now, tolerance=0)
    assert len(signing.parse(after.signature)[1]) == 1
    signing.verify(after.body, after.signature, [rotated.secret], now=now)
    try:
        signing.verify(after.body, after.signature, [hook.secret], now=now)
    except signing.SignatureError:
        pass
    else:
        raise AssertionError("the expired secret still signs")


async def test_manual_redelivery_sends_a_settled_delivery_again(
    db: asyncpg.Connection, nsettings: Settings, receiver: Receiver, clock: Clock
) -> None:
    hook = await add_endpoint(db, receiver.url, clock())
    event_id = await enqueue(db, "s-1")
    async with Notifier(nsettings, clock=clock) as notifier:
        await notifier.once()
        [row] = await store.deliveries(db, "acme", hook.id, limit=1)
        assert await store.redeliver(db, "acme", hook.id, row["id"], clock())
        assert not await store.redeliver(db, "beta", hook.id, row["id"], clock())
        await notifier.once()
    assert receiver.ids() == [event_id, event_id]
    [row] = await store.deliveries(db, "acme", hook.id, limit=1)
    assert orjson.loads(row["attempt_log"])[-1]["attempt"] == 2


async def received(receiver: Receiver, n: int) -> None:
    """Until the receiver has `n` requests (bounded: a hung loop fails the test)."""
    async with asyncio.timeout(30):
        while len(receiver.received) < n:  # noqa: ASYNC110 - the receiver's server fills it
            await asyncio.sleep(0.02)


async def test_the_run_loop_outlives_closed_connections_and_pool_timeouts(
    db: asyncpg.Connection,
    nsettings: Settings,
    receiver: Receiver,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await add_endpoint(db, receiver.url, clock())
    first = await enqueue(db, "s-1")
    s = nsettings.replace(notifier_poll_interval_s=0.05)
    stop = asyncio.Event()
    async with Notifier(s, clock=clock) as notifier:
        monkeypatch.setattr(
            notifier, "round", failing_first(notifier.round, lost_connection_errors())
        )
        loop = asyncio.create_task(notifier.run(stop))
        await received(receiver, 1)
        assert notifier.metrics.errors._value.get() == 3
        # Every connection of the notifier terminated by Postgres: the loop goes on.
        await terminate_others(db)
        second = await enqueue(db, "s-2")
        await received(receiver, 2)
        assert not loop.done()
        stop.set()
        await loop
    assert receiver.ids() == [first, second]


async def test_private_addresses_are_refused_unless_the_operator_allows_them(
    db: asyncpg.Connection, nsettings: Settings, receiver: Receiver, clock: Clock
) -> None:
    """An endpoint made before the rule, or a name that resolves to loopback: the notifier
    refuses to connect, the attempt failing like any other; allowed, the same one is delivered."""
    port = receiver.url.rsplit(":", 1)[1]
    await add_endpoint(db, receiver.url, clock())  # http://127.0.0.1:…
    named = f"http://{socket.gethostname()}:{port}"
    resolved = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    by_name = all(endpoints.non_global(a) for a in resolved)
    if by_name:  # this machine's name resolves to loopback or a private address
        await add_endpoint(db, named, clock())
    await enqueue(db, "s-1")
    private = nsettings.replace(notifier_private_urls=False)
    async with Notifier(private, clock=clock) as notifier:
        assert await notifier.once() == 1 + by_name
    assert receiver.received == []
    errors = await db.fetch("SELECT error FROM webhook_delivery_attempts ORDER BY error")
    assert len(errors) == 1 + by_name
    assert all("METER_NOTIFIER_PRIVATE_URLS" in r["error"] for r in errors), errors
    await run_out_leases(db)
    clock.advance(1.0)  # past the capped backoff
    async with Notifier(nsettings, clock=clock) as notifier:
        assert await notifier.once() == 1 + by_name
    assert len(receiver.received) == 1 + by_name


async def test_the_resolver_keeps_only_global_addresses() -> None:
    resolver = egress.GlobalOnlyResolver()
    try:
        with pytest.raises(egress.PrivateAddressRefused):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


async def test_retention_deletes_finished_deliveries_then_events_no_delivery_names(
    db: asyncpg.Connection, nsettings: Settings, receiver: Receiver, clock: Clock
) -> None:
    await add_endpoint(db, receiver.url, clock())
    old, recent = await enqueue(db, "old"), await enqueue(db, "recent")
    async with Notifier(nsettings, clock=clock) as notifier:
        assert await notifier.once() == 2
        receiver.status = 500
        failing = await enqueue(db, "failing")  # stays pending: retried
        assert await notifier.once() == 1
        past = dt.timedelta(seconds=nsettings.notifier_retention_s + 3600)
        for event in (old, failing):
            await db.execute(
                "UPDATE webhook_deliveries SET created_at = created_at - $2::interval,"
                " retry_from = retry_from - $2::interval WHERE event_id = $1",
                event,
                past,
            )
            await db.execute(
                "UPDATE webhook_events SET created_at = created_at - $2::interval WHERE id = $1",
                event,
                past,
            )
        assert await notifier.prune() == (1, 1)
        assert await notifier.prune() == (0, 0)
        assert notifier.metrics.pruned.labels("webhook_events")._value.get() == 1
    left = await db.fetch(
        "SELECT e.id, d.status, (SELECT count(*) FROM webhook_delivery_attempts a"
        " WHERE a.delivery_id = d.id) AS attempts"
        " FROM webhook_events e JOIN webhook_deliveries d ON d.event_id = e.id ORDER BY e.seq"
    )
    assert [tuple(r) for r in left] == [(recent, "succeeded", 1), (failing, "pending", 1)]
    gone = await db.fetchval("SELECT count(*) FROM webhook_delivery_attempts")
    assert gone == 2  # the old delivery's attempt went with it
