"""The alert evaluator: evaluates usage alert rules on what the aggregator folds and fires each
crossed threshold once per billing period (docs/alerts.md)."""
