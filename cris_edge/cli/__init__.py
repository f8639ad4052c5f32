"""Command-line entry points: cris-train, cris-eval, cris-prepare, cris-export, cris-demo,
cris-predict (their errors, ``--debug`` and exit codes: `cris_edge.cli.common`)."""
