"""Egress adapters: one per backend kind, behind the Backend protocol in base.py."""
