"""Neural networks dub-film runs, each written to load its published checkpoint strictly.

Submodules import torch; this package file does not, so importing
``lipsync.models.<x>`` costs only what ``<x>`` needs.
"""
