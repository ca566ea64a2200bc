"""Connectivity handling, input validation and the provenance of results."""
