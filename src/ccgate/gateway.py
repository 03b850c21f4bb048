"""The composition root (being written)."""
