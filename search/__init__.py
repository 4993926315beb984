"""Queries, result rendering and the `imgsearch` click CLI (search/cli.py)."""
