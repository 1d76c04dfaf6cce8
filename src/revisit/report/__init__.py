"""Unique-visitor report: query model, visit sessionisation, output formats."""
