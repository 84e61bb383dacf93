"""Policies: schema, loader and the pure routing engine (no I/O beyond reading the file)."""
