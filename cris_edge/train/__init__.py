"""Training: the official CRIS recipe (single process, DDP), CM-MaskSD."""
