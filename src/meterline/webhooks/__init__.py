"""Webhooks (DESIGN §14): pure parts. Event types and payloads, Standard Webhooks
signing, the retry schedule. The outbox tables live in store/outbox.py and the
dispatcher in services/webhooks.py."""
