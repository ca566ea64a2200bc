"""Console scripts: ``diffpool-train`` and ``diffpool-report``."""
