"""Sinks turn neutral samples into an output format; they know no vendor."""
