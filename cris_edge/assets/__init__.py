"""Files shipped with the package: the demo model (``cris_tiny`` trained on synthetic data)."""
