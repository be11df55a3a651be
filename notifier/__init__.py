"""The notifier: fans outgoing webhook events out to endpoints and delivers them, signed."""
