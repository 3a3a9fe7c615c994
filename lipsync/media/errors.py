"""Errors of the media layer."""


class MediaError(RuntimeError):
    """A media file is missing, unreadable, or not what the operation needs.

    Messages always name the file, the offending value and, where there is one, the fix.
    """
