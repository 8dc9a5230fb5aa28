"""The template engine for side services.

Karvdash-compatible templates, rendered inside parsed YAML, never in text.
"""
