"""The engine: turns in, neutral agent events out."""
