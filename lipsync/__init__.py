"""dub-film's library: media I/O, shots, faces, lip-sync models, inference and metrics.

It never imports Prefect: everything here is usable and testable on its own.
"""
