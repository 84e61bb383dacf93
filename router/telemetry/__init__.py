"""Metrics, traces and logs: observers of requests, never deciders."""
