"""Datasets: the synthetic referring dataset (numpy only)."""
