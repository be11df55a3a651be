"""The ingest service: validation, group commit to Redis, the HTTP handler."""
