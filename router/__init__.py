"""ccgate: a gateway between coding agents and model backends."""

__version__ = "0.1.0"
