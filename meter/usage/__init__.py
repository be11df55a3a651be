"""The usage API: `GET /v1/customers/{id}/usage` (quantities, amounts, run-rate and the projected
invoice of a billing period) and `…/usage/history` (a time series from the rollups).

Modules: `tally` (folding buckets and pending events, pure), `params` (request parsing, pure),
`report` (the response through the pricing engine, pure), `queries` (SQL), `store` (Postgres
reads), `plans` (the plan cache and the listener that keeps it current), `pending` (the
not-yet-aggregated part of the Redis streams), `api` (handlers) and `routes` (`setup(app)`).
"""
