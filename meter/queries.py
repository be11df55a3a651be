"""Every SQL statement the meter package runs, by name. Schema lives in migrations/."""

from __future__ import annotations

# --- migrations -------------------------------------------------------------------------------
# Any fixed number works as the lock key, as long as every `meter migrate` uses the same one.
MIGRATION_LOCK_KEY = 0x6D65746572  # "meter"

CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
LOCK_MIGRATIONS = "SELECT pg_advisory_lock($1)"
UNLOCK_MIGRATIONS = "SELECT pg_advisory_unlock($1)"
APPLIED_MIGRATIONS = "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
SCHEMA_MIGRATIONS_EXISTS = "SELECT to_regclass('schema_migrations')"
RECORD_MIGRATION = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"

# --- API keys ---------------------------------------------------------------------------------
INSERT_API_KEY = """
INSERT INTO api_keys (tenant, name, key_hash, key_prefix) VALUES ($1, $2, $3, $4) RETURNING id
"""
TENANT_FOR_KEY_HASH = """
SELECT tenant FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL
"""
REVOKE_API_KEY = "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL"
LIST_API_KEYS = """
SELECT id, tenant, name, key_prefix, created_at, revoked_at FROM api_keys ORDER BY id
"""

# --- local meter definitions (`meter meters`; schema: migrations/0002_usage.sql) --------------
DEFINE_METER = """
INSERT INTO meter_definitions AS d (tenant, meter, aggregation, unique_property, source)
VALUES ($1, $2, $3, $4, 'local')
ON CONFLICT (tenant, meter) DO UPDATE SET aggregation = EXCLUDED.aggregation,
    unique_property = EXCLUDED.unique_property, source = 'local', updated_at = now()
"""
# Every meter of tenant $1 (all tenants when null) with the aggregation it reports by, and
# where that comes from: the local definition, else the Stripe meter (migrations/0012).
LIST_METERS = """
SELECT d.tenant, d.meter, d.aggregation, d.unique_property, 'local' AS source,
    f.stripe_meter, f.formula, f.reportable
FROM meter_definitions d
LEFT JOIN stripe_meter_formulas f ON f.meter = d.meter
WHERE $1::text IS NULL OR d.tenant = $1
UNION ALL
SELECT NULL, f.meter, f.aggregation, NULL, 'stripe', f.stripe_meter, f.formula, f.reportable
FROM stripe_meter_formulas f
ORDER BY 2, 1 NULLS FIRST
"""

# --- meter dimensions (`meter meters update`, PUT /v1/meters/{name}/dimensions;
# schema: migrations/0018_dimensions.sql) -----------------------------------------------------
# A new version from $3 on; stating the same moment twice replaces that version (it is not in
# effect yet: the moment may not lie in the past, meter/meters_api.py and meter/cli.py check).
SET_DIMENSIONS = """
INSERT INTO meter_dimensions (tenant, meter, effective_from, keys) VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant, meter, effective_from) DO UPDATE SET keys = excluded.keys,
    created_at = now()
"""
# Every dimension version of tenant $1 (all tenants when null), meter $2 (all when null).
DIMENSION_VERSIONS = """
SELECT tenant, meter, effective_from, keys FROM meter_dimensions
WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR meter = $2)
ORDER BY tenant, meter, effective_from
"""

# Price mappings (`meter meters map`; migrations/0018_dimensions.sql). $3: the filter as JSON.
MAP_PRICE = """
INSERT INTO meter_price_mappings (tenant, meter, filter, event_name, price)
VALUES ($1, $2, $3::jsonb, $4, $5)
ON CONFLICT (tenant, meter, filter) DO UPDATE SET event_name = excluded.event_name,
    price = excluded.price, created_at = now()
"""
UNMAP_PRICE = (
    "DELETE FROM meter_price_mappings WHERE tenant = $1 AND meter = $2 AND filter = $3::jsonb"
)
# The meter's mappings, locked while one is added (their keys must stay the same).
PRICE_MAPPINGS_OF = """
SELECT filter::text AS filter, event_name, price FROM meter_price_mappings
WHERE tenant = $1 AND meter = $2 ORDER BY filter::text FOR UPDATE
"""
ALL_PRICE_MAPPINGS = """
SELECT tenant, meter, filter::text AS filter, event_name, price FROM meter_price_mappings
WHERE $1::text IS NULL OR tenant = $1
ORDER BY tenant, meter, filter::text
"""

# --- health -----------------------------------------------------------------------------------
PING = "SELECT 1"

# --- strict mode (METER_STRICT) ---------------------------------------------------------------
# An event's customer is our external id or the Stripe customer id: billing's lookup,
# meter.billing.queries.STRIPE_IDS_OF_CUSTOMERS.
# A meter is known when Stripe has an active billing meter with that event name, or a local
# definition exists (meters Stripe cannot express, see migrations/0002_usage.sql).
KNOWN_METERS = """
SELECT event_name AS meter FROM billing_meters
WHERE status = 'active' AND event_name = ANY($2::text[])
UNION
SELECT meter FROM meter_definitions WHERE tenant = $1 AND meter = ANY($2::text[])
"""

# `meter dev`: whether its database exists yet.
DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = $1"
