"""Lip-sync inference: one shot at a time, streamed, batched, blended, overlapped.

For every frame of a shot and every face track driven in it, the engine crops the
face (square, padded), feeds the generator (:mod:`lipsync.render.generator`) the
crop and the mel window of that frame, and pastes the generated mouth back with a
feathered lower-face mask (and optional colour matching), so no rectangle edge
shows.  The shot is decoded once and encoded once, straight into the delivery
codec when given one (``settings``), whatever the number of tracks.

Overlap: three stages run at once, joined by bounded queues -- a decode thread
reads frames from the decoder process, the calling thread crops and runs the
generator batch after batch, and an encode thread pastes each finished batch and
feeds the encoder process -- so the generator never waits for pixels to be read,
pasted or written.  At most about three batches of frames are held (memory does
not grow with the shot).

Rules:

* **Training contract**: everything the generator is fed is decided by its
  ``contract`` (:class:`lipsync.models.wav2lip.Wav2LipContract`), read here and
  nowhere else: the mel window of shot frame ``i`` starts at mel column
  ``floor(i * 80 / fps)`` (the reference's ``int(80. * i / fps)``, exact rational
  arithmetic, any frame rate; :func:`lipsync.audio.mel.mel_window_start`), the face
  crop is resized with bilinear interpolation, and the output is truncated to
  uint8 -- as the published checkpoints were trained and run.
  ``TrackRender.window_sample_starts`` are the frames' exact start samples,
  ``round(i * sample_rate / fps)`` (:func:`lipsync.audio.mel.window_sample_starts`).
* **Parity dump**: an optional ``dump`` hook (:class:`NpzDump`) receives, for every
  generated face, the generator's exact input and output (:class:`GeneratorIO`).
* **Audio length**: the track's audio starts at the shot's first frame; audio
  shorter than the shot is padded with silence, a longer tail is ignored.
* **Missing face / silence**: frames where the track has no observation are left
  untouched.  When a track is given ``speaking`` ranges, only frames inside them
  are synthesised and all others keep the original picture; without ranges, every
  frame of the track is synthesised (silent audio then yields a closed mouth).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dubcore.timebase import FrameRange

from ..media.frames import LOSSLESS, EncodeSettings, FrameReader
from ..media.probe import MediaInfo, probe
from .audio import _Windows
from .blend import crop_box, frame_domain, paste_face
from .generator import DumpHook, GeneratorIO, as_generator, load_generator
from .params import LipSyncOutOfMemoryError, LipSyncParams, Progress, ShotRender, TrackDrive, TrackRender

log = logging.getLogger(__name__)


@dataclass
class _Item:
    """One face to generate: where it goes and what goes in."""

    slot: int  # index of its frame in the batch's frames
    box: tuple[int, int, int, int]
    crop: np.ndarray  # the box's BGR pixels as read (colour matching)
    face: np.ndarray  # (S, S, 3) uint8 crop resized to the model's face size
    mel: np.ndarray  # (1, n_mels, mel_step)
    track_id: str = ""
    frame: int = -1  # frame index in the video


_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Stop(Exception):
    """Raised in a helper thread when the render is abandoned."""


def _put(q: "queue.Queue[Any]", item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stop
        try:
            q.put(item, timeout=0.05)
            return
        except queue.Full:
            continue


def _get(q: "queue.Queue[Any]", stop: threading.Event) -> Any:
    while True:
        if stop.is_set():
            raise _Stop
        try:
            return q.get(timeout=0.05)
        except queue.Empty:
            continue


class LipSyncEngine:
    """Owns a loaded generator, its device and batching; renders shots.

    ``model`` is a generator (:class:`lipsync.render.generator.Generator`) or a torch
    module with Wav2Lip's contract.  The model's input contract (face size, masking
    row, mel window, sample rate, hop) is read here and nowhere else.
    """

    def __init__(
        self,
        model: Any,
        device: str = "cpu",
        params: LipSyncParams = LipSyncParams(),
        *,
        contract: Any = None,
        dump: DumpHook | None = None,
    ) -> None:
        self.generator = as_generator(model, device, contract)
        self.device = getattr(self.generator, "device", device)
        # The training contract (window start, resize, output conversion): the generator's.
        self.contract = self.generator.contract
        self.params = params
        on_gpu = str(self.device).startswith("cuda")
        self.batch_size = params.batch_size or (128 if on_gpu else 16)
        self.dump = dump

    @property
    def model(self) -> Any:
        return getattr(self.generator, "model", self.generator)

    def with_params(self, params: LipSyncParams) -> "LipSyncEngine":
        """The same loaded generator with other crop / blend / batch parameters (for a second take)."""
        import copy

        other = copy.copy(self)
        other.params = params
        other.batch_size = params.batch_size or self.batch_size
        return other

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str = "cpu", params: LipSyncParams = LipSyncParams(),
                        store: str | None = None, family: str | None = None) -> "LipSyncEngine":
        """Load ``checkpoint`` (a model store entry or a file) with its family's generator (``family``:
        a registered name; ``None`` or "auto": the store entry's family, else wav2lip)."""
        return cls(load_generator(checkpoint, device, store, None if family in (None, "auto") else family), device, params)

    # ---- audio

    def windows_for(self, audio: np.ndarray, frame_count: int, fps: Fraction) -> tuple[_Windows, tuple[int, ...]]:
        """Mel windows of a shot's audio, cut per frame on demand, and each frame's start sample.

        Windows are computed a block at a time (:class:`_Windows`), never all at once,
        so memory stays small for long shots."""
        from ..audio.mel import window_sample_starts

        starts = tuple(int(s) for s in window_sample_starts(frame_count, fps, self.contract))
        return _Windows(np.asarray(audio, dtype=np.float32), fps, self.contract), starts

    # ---- generator

    def _generate(self, items: list[_Item]) -> np.ndarray:
        """Run the generator on ``items``; returns ``(N, S, S, 3)`` uint8 BGR faces."""
        g = self.generator
        face_input, mel = g.preprocess(np.stack([it.face for it in items]), np.stack([it.mel for it in items]))
        raw = g.forward(face_input, mel)
        if self.dump is not None:
            for k, it in enumerate(items):
                m = mel[k, 0] if mel.ndim == 4 else mel[k]
                self.dump(GeneratorIO(it.track_id, it.frame, it.box, face_input[k], m, raw[k]))
        return g.postprocess(raw)

    def generate(self, items: list[_Item]) -> np.ndarray:
        """Generate in chunks of ``batch_size``; on device out-of-memory halve the batch and retry."""
        outputs: list[np.ndarray] = []
        start = 0
        oom = getattr(self.generator, "is_out_of_memory", None)
        while start < len(items):
            chunk = items[start : start + self.batch_size]
            try:
                outputs.append(self._generate(chunk))
            except Exception as exc:
                if oom is None or not oom(exc):
                    raise
                if self.batch_size == 1 or self.params.batch_size is not None:
                    raise LipSyncOutOfMemoryError(
                        f"the generator ran out of GPU memory at batch_size={self.batch_size} on {self.device}; "
                        f"lower batch_size (e.g. batch_size={max(1, self.batch_size // 2)}), or free the GPU"
                    ) from exc
                self.batch_size = max(1, self.batch_size // 2)
                log.warning("out of GPU memory: batch_size lowered to %d", self.batch_size)
                continue
            start += len(chunk)
        return np.concatenate(outputs) if outputs else np.zeros((0,), np.uint8)

    # ---- shot

    def render_shot(
        self,
        video: str | Path,
        frames: FrameRange,
        drives: Sequence[TrackDrive],
        out: str | Path,
        *,
        info: MediaInfo | None = None,
        settings: EncodeSettings | None = None,
        progress: Progress | None = None,
    ) -> ShotRender:
        """Render ``frames`` of ``video`` with every drive applied; write the segment to ``out``.

        ``settings`` is the encode of the segment: the film's delivery settings (resolved,
        :func:`lipsync.media.assemble.resolve_settings`), so the assembler copies it into
        the film without decoding it again; ``None`` writes lossless FFV1.  ``info`` is the
        source's probe (probed here when not given)."""
        from ..media.assemble import part_writer

        info = info or probe(video)
        v = info.require_video()
        plans = []
        for d in drives:
            windows, starts = self.windows_for(d.audio, frames.duration, v.fps)
            plans.append((d, windows, starts))
        counts = {d.track.id: {"synthesized": 0, "untouched": {}} for d in drives}
        domain = frame_domain(v.pix_fmt, v.width, v.height)
        reader = FrameReader(video, frames=frames, pix_fmt=domain.read_fmt, info=info)
        writer = part_writer(out, v, replace(settings or LOSSLESS, audio_language=None), frames.duration, pix_fmt=domain.read_fmt)
        stop = threading.Event()
        decoded: queue.Queue[Any] = queue.Queue(maxsize=max(2, self.batch_size))
        generated: queue.Queue[Any] = queue.Queue(maxsize=1)
        failures: list[BaseException] = []

        def decode() -> None:
            try:
                for raw in reader:
                    _put(decoded, raw, stop)
                _put(decoded, _END, stop)
            except _Stop:
                pass
            except BaseException as exc:  # handed to the render thread
                try:
                    _put(decoded, _Failed(exc), stop)
                except _Stop:
                    pass
            finally:
                reader.close()

        def encode() -> None:
            try:
                while True:
                    batch = _get(generated, stop)
                    if batch is _END:
                        return
                    frame_list, items, faces = batch
                    for it, face in zip(items, faces):
                        paste_face(domain, frame_list[it.slot], it.box, it.crop, face, self.params.blend)
                    for frame in frame_list:
                        writer.write(frame)
            except _Stop:
                pass
            except BaseException as exc:
                failures.append(exc)
                stop.set()

        threads = [threading.Thread(target=decode, name="lipsync-decode", daemon=True),
                   threading.Thread(target=encode, name="lipsync-encode", daemon=True)]
        c = self.contract
        with writer:
            for t in threads:
                t.start()
            try:
                frame_list: list[np.ndarray] = []
                items: list[_Item] = []
                done = 0
                for offset in range(frames.duration + 1):
                    got = _get(decoded, stop)
                    if isinstance(got, _Failed):
                        raise got.exc
                    if got is not _END:
                        index = frames.start + offset
                        frame_list.append(got)
                        for d, windows, _ in plans:
                            obs = d.track.at(index)
                            u = counts[d.track.id]["untouched"]
                            if obs is None:  # the track is not in this frame
                                u["no face"] = u.get("no face", 0) + 1
                                continue
                            if d.speaking is not None and not any(index in r for r in d.speaking):
                                u["silent"] = u.get("silent", 0) + 1
                                continue
                            box = crop_box(obs.box, self.params.crop, (v.width, v.height), even=domain.even)
                            crop = domain.crop_bgr(got, box)
                            items.append(_Item(len(frame_list) - 1, box, crop, c.resize_face(crop),
                                               windows[offset], d.track.id, index))
                            counts[d.track.id]["synthesized"] += 1
                    last = got is _END
                    # Bounded memory: at most one batch of faces, or of frames, is gathered at a time.
                    if frame_list and (last or len(items) >= self.batch_size or len(frame_list) >= self.batch_size):
                        faces = self.generate(items) if items else []
                        _put(generated, (frame_list, items, faces), stop)
                        done += len(frame_list)
                        frame_list, items = [], []
                        if progress is not None:
                            progress(done, frames.duration)
                    if last:
                        break
                _put(generated, _END, stop)
                threads[1].join()
                if failures:
                    raise failures[0]
            except BaseException as exc:
                stop.set()
                reader.close()
                for t in threads:
                    t.join(timeout=10)
                if isinstance(exc, _Stop) and failures:
                    raise failures[0] from None
                raise
            finally:
                stop.set()
                for t in threads:
                    t.join(timeout=10)
        renders = tuple(
            TrackRender(d.track.id, counts[d.track.id]["synthesized"], dict(counts[d.track.id]["untouched"]), starts)
            for d, _, starts in plans
        )
        return ShotRender(Path(out), frames, renders, self.batch_size)

