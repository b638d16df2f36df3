"""Sampling and clip transforms."""
