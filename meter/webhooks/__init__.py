"""Outgoing webhooks: events meter announces to a tenant's endpoints, signed like Stripe's."""
