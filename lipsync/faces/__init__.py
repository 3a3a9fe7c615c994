"""Faces: detection (this package's interface) and, beside it, tracking and smoothing.

Importing this package does not import torch; detectors load their framework when built.
"""

from .detect import DETECTORS, Detections, FaceDetector, build_detector

__all__ = ["DETECTORS", "Detections", "FaceDetector", "build_detector"]
