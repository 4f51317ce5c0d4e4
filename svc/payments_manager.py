"""Every Stripe call of the service, and the webhook's signature check."""
