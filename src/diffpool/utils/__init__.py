"""Connectivity handling and input validation."""
