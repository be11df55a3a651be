"""Usage alert rules: thresholds on a customer's usage of a meter in its billing period, kept per
tenant (table alert_rules) and evaluated by the evaluator process (evaluator/; docs/alerts.md)."""
