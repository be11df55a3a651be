"""Billing: Postgres kept in step with Stripe, subscription self-service, entitlements, dunning.

Stripe sits behind `gateway.PaymentGateway`, a small interface without SDK types.
"""
