"""The model store's errors (every one a :class:`StoreError`)."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of the model store's errors."""


class UnknownWeightsError(StoreError, KeyError):
    """A name that is not in :data:`REGISTRY`."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class MissingWeightsError(StoreError, FileNotFoundError):
    """The file of an entry is not in the store (or was never verified there)."""


class ChecksumError(StoreError, ValueError):
    """A file's sha256 or size is not the one recorded."""


class UnverifiedWeightsError(StoreError, ValueError):
    """Pulling an entry that has no recorded sha256 without ``allow_unverified=True``."""
