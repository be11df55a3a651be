"""The aggregator: drains the Redis event streams into Postgres rollups, exactly once."""
