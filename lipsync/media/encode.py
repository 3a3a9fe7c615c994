"""How a picture is encoded: :class:`EncodeSettings`, the delivery codec that follows the master, and the
measured qualities (:data:`DELIVERY_CRF`).  Used by :class:`lipsync.media.frames.FrameWriter` and the assembler."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .errors import MediaError
from .probe import VideoStream

log = logging.getLogger("lipsync.media.frames")


@dataclass(frozen=True)
class EncodeSettings:
    """How the final picture is encoded.

    ``codec='auto'`` (what :func:`lipsync.media.assemble.assemble` uses unless told)
    follows the source's codec family, see :func:`delivery_settings`.  An explicit
    encoder (libx264, libx265, prores_ks, ffv1, ...) is used as given; ``crf=None``
    with x264/x265 takes the measured default of :data:`DELIVERY_CRF`.
    ``codec='ffv1'`` is mathematically lossless."""

    codec: str = "libx264"
    crf: int | None = 8
    preset: str | None = "medium"
    pix_fmt: str | None = None  # None: same as the input frames
    extra: tuple[str, ...] = ()
    profile: str | None = None  # encoder profile (ProRes: proxy, lt, standard, hq, 4444, 4444xq)
    #: Language of the delivered audio (BCP 47 or ISO 639-2, e.g. a manifest's dub.language),
    #: written as the container's ISO 639-2 tag; None leaves it undetermined.
    audio_language: str | None = None

    def args(self, pix_fmt: str) -> list[str]:
        if self.codec in ("auto", "source"):
            raise MediaError("EncodeSettings(codec='auto') must be resolved against the source first "
                             "(lipsync.media.frames.delivery_settings)")
        out = ["-c:v", self.codec]
        if self.codec in ("libx264", "libx265"):
            crf = self.crf if self.crf is not None else DELIVERY_CRF[self.codec]
            out += ["-crf", str(crf)]
            if self.preset:
                out += ["-preset", self.preset]
            if self.codec == "libx265":
                out += ["-x265-params", "log-level=error"]
        elif self.codec.endswith("_nvenc"):  # NVENC: constant quality, the x264 scale (not measured for 45 dB)
            out += ["-rc", "vbr", "-cq", str(self.crf if self.crf is not None else 16), "-b:v", "0", "-preset", "p5"]
        elif self.codec == "ffv1":
            out += ["-level", "3", "-g", "1", "-slicecrc", "1"]
        elif self.codec.startswith("prores"):
            profile = PRORES_PROFILES.get((self.profile or "hq").lower().replace(" ", "").replace("_", ""))
            if profile is None:
                raise MediaError(f"ProRes profile {self.profile!r} unknown; use one of {', '.join(PRORES_PROFILES)}")
            out += ["-profile:v", str(profile), "-vendor", "apl0"]
        out += ["-pix_fmt", self.pix_fmt or pix_fmt]
        return out + list(self.extra)


#: CRF of the delivered picture when the job does not set one, per encoder.  Chosen by
#: measurement so unchanged shots keep every frame at >= 45 dB PSNR against the master,
#: PSNR over the Y'CbCr planes (ffmpeg's psnr filter, the codec-standard measure); the x264
#: value also keeps >= 45 dB in RGB (the measure of tests/test_run.py and test_assemble.py,
#: where CRF 10 gave 44.8 dB on one frame).  x265 needs a lower CRF than x264 for the same
#: PSNR; it keeps >= 45 dB Y'CbCr at CRF 10 but only 42 dB in RGB on the synthetic worst case.
#: ================================  ====  ==================  ===============  ==============
#: master                            enc   CRF                 min frame PSNR   size / master
#: ================================  ====  ==================  ===============  ==============
#: synthetic 320x240 H.264 (tests)   x264  **8** / 10 / 12     51.8/50.5/49.6   1.61/1.45/1.30
#:   same, RGB PSNR                  x264  **8** / 10 / 12     46.6/45.4/44.3
#: synthetic 320x240 H.264 (tests)   x265  8 / **10** / 12     49.2/47.6/46.4   2.25/1.98/1.73
#: grainy 720p H.264 CRF 18, 34 Mb/s x264  10 / 12 / 14 / 16   49.6/48.6/46.9/45.2  1.50/1.25/1.23/1.05
#: (tests/test_delivery.py, 320x240 with grain: H.264 -> x264 CRF 8: 53.0 dB, 2.5x; HEVC -> x265 CRF 10: 51.1 dB, 2.9x;
#:  ProRes HQ -> ProRes HQ: 52.5 dB, 1.03x)
#: grainy 720p H.264 CRF 18, 34 Mb/s x265  10 / 12             46.8/45.3        1.45/1.24
#: grainy 720p HEVC CRF 22, 4.3 Mb/s x265  **10** / 12 / 16     48.2/47.1/45.5   2.62/2.11/1.44
#:   same master, x264 (the old default family)  10 / 16        49.8/45.3        6.13/1.80
#: bench_delivery 1080p25 60 s H.264 6.96 Mb/s  x264  **8** (10)   57.2 (55.7)      2.39 (2.12): 16.7 Mb/s
#: bench_delivery 1080p25 60 s HEVC 6.20 Mb/s   x265  **10**       54.3             2.85: 17.8 Mb/s
#: ================================  ====  ==================  ===============  ==============
#:
#: A lossy master re-encoded at a quality that keeps 45 dB is larger than the master
#: (its compression noise is coded again); bench/bench_delivery.py prints the sizes
#: of a 1-minute 1080p job.  x265 needs a lower CRF than x264 for the same PSNR.
DELIVERY_CRF: dict[str, int] = {"libx264": 8, "libx265": 10}

#: prores_ks ``-profile:v`` numbers by profile name (ffprobe's profile, lower-cased, no spaces).
PRORES_PROFILES: dict[str, int] = {"proxy": 0, "lt": 1, "standard": 2, "hq": 3, "4444": 4, "4444xq": 5}

#: Encoder of the delivered picture by the source's codec (ffprobe codec_name): the same family.
SOURCE_ENCODERS: dict[str, str] = {"h264": "libx264", "hevc": "libx265", "prores": "prores_ks", "ffv1": "ffv1"}

#: Encoders each delivery container holds.
CONTAINER_CODECS: dict[str, tuple[str, ...]] = {
    ".mp4": ("libx264", "libx265"),
    ".m4v": ("libx264", "libx265"),
    ".mov": ("libx264", "libx265", "prores_ks"),
    ".mkv": ("libx264", "libx265", "prores_ks", "ffv1"),
}


def delivery_settings(
    like: VideoStream,
    container: str,
    *,
    codec: str = "auto",
    crf: int | None = None,
    preset: str | None = "medium",
    audio_language: str | None = None,
) -> EncodeSettings:
    """The encode of a delivered film whose picture comes from ``like`` (the probed master).

    ``codec='auto'`` (or ``'source'``) follows the master's family: H.264 -> libx264,
    HEVC -> libx265, ProRes -> prores_ks at the master's profile (HQ when unknown),
    FFV1 -> FFV1.  Any other master codec (MPEG-2, VP9, AV1, DNxHD, ...) and a family
    the ``container`` (``.mp4``/``.mov``/``.mkv`` or the output file name) cannot hold
    (ProRes or FFV1 in MP4) are delivered as H.264 (libx264), with a warning naming
    the container that would keep the family.  x264/x265 use ``crf`` or
    :data:`DELIVERY_CRF` (>= 45 dB PSNR on unchanged shots).  An explicit ``codec``
    is used as given.
    """
    from dataclasses import replace

    return replace(_delivery(like, container, codec, crf, preset), audio_language=audio_language)


def _delivery(like: VideoStream, container: str, codec: str, crf: int | None, preset: str | None) -> EncodeSettings:
    ext = container if container.startswith(".") else "." + container.rsplit(".", 1)[-1]
    ext = ext.lower()
    if codec not in ("auto", "source"):
        if codec == "ffv1":
            return LOSSLESS
        keep_profile = codec.startswith("prores") and like.codec == "prores"
        return EncodeSettings(codec=codec, crf=crf, preset=preset, profile=like.profile if keep_profile else None)
    family = SOURCE_ENCODERS.get(like.codec)
    fits = CONTAINER_CODECS.get(ext, ("libx264",))
    if family is None:
        log.info("%s master: delivered as H.264 (libx264); set options.video_codec to choose another encoder", like.codec)
        family = "libx264"
    elif family not in fits:
        log.warning("%s master: %s cannot hold %s, delivered as H.264 (libx264); set options.container: %s to keep it",
                    like.codec, ext, family, "mov" if family.startswith("prores") else "mkv")
        family = "libx264"
    if family == "ffv1":
        return LOSSLESS
    if family.startswith("prores"):
        return EncodeSettings(codec="prores_ks", crf=None, preset=None, profile=like.profile or "hq")
    return EncodeSettings(codec=family, crf=crf, preset=preset)


LOSSLESS = EncodeSettings(codec="ffv1", crf=None, preset=None)


#: The delivered film's default: the source's codec family at the measured quality (see delivery_settings).
AUTO = EncodeSettings(codec="auto", crf=None, preset="medium")
