"""The reporter: sends rolled-up usage to Stripe Billing Meters, exactly once."""
