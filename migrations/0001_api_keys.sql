-- Ingest API keys. Only the sha256 of a key is stored; the key itself is shown once at creation.
-- A tenant is the namespace of a key: event ids are deduplicated per tenant.
CREATE TABLE api_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant      text        NOT NULL,
    name        text        NOT NULL,
    key_hash    bytea       NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    -- The first characters of the key, so an operator can tell keys apart without the secret.
    key_prefix  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE INDEX api_keys_tenant ON api_keys (tenant);
