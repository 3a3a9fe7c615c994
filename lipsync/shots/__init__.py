"""Shot splitting: one detector per file, registered here by name."""

from __future__ import annotations

from .adaptive import AdaptiveShotDetector
from .base import ShotDetector
from .content import ContentShotDetector
from .fade import FadeShotDetector

#: Every available detector, by the name used in options and on the command line.
DETECTORS: dict[str, type[ShotDetector]] = {
    ContentShotDetector.name: ContentShotDetector,
    AdaptiveShotDetector.name: AdaptiveShotDetector,
    FadeShotDetector.name: FadeShotDetector,
}

from .detect import DEFAULT_DETECTORS, detect_shots, merge_cuts  # noqa: E402
from .export import read_shots, write_edl, write_otio, write_shot_files, write_shots  # noqa: E402

__all__ = [
    "DEFAULT_DETECTORS",
    "DETECTORS",
    "ShotDetector",
    "detect_shots",
    "merge_cuts",
    "read_shots",
    "write_edl",
    "write_otio",
    "write_shot_files",
    "write_shots",
]
