-- Billing: when a subscription's paused payment collection resumes (`pause_collection.resumes_at`,
-- "the time after which the subscription will resume collecting payments"), beside
-- `pause_behavior`. An invoice created after it is collected as usual (meter/pricing/lifecycle.py).
ALTER TABLE subscriptions ADD COLUMN pause_resumes_at timestamptz;
