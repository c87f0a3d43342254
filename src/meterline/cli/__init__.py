"""The command line: a thin adapter over the application services (DESIGN §12)."""
