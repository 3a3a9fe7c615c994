"""The ``dub`` command line: a thin layer over ``lipsync`` and the ``dub-film`` flow."""
