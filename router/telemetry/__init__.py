"""Metrics (and, with [observability], traces): observers of requests, never deciders."""
