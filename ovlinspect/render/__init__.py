"""Renderers: rich text for people, JSON for programs, Prometheus/Nagios for monitoring."""
