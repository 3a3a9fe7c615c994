"""Prefect flows of dub-film."""
