"""Prefect tasks of the dub-film pipeline: one module per stage, thin wrappers over ``lipsync``."""
