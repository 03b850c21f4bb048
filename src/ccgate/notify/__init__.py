"""Telling people outside ccgate what happened: webhooks (``notify.webhooks``)."""
