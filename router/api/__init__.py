"""HTTP handlers: one module per dialect, plus health and errors."""
