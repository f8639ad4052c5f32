"""The CRIS model in PyTorch, built on open_clip's CLIP modules."""
