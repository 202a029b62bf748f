"""Filters over prompt groups (slime's filter_hub)."""
