"""Load generation and benchmark results."""
