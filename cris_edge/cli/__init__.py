"""Command-line entry points: cris-train, cris-eval, cris-prepare, cris-export."""
