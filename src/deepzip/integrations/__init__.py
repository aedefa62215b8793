"""Adapters that plug deepzip's training callbacks into other libraries' loops (optional extras)."""
