"""Hydra configs of ``diffpool-train`` (installed as the package ``diffpool.conf``)."""
