"""Plug-in seams through `dub run`: a second generator family and a second QC metric, registered from here,
run through the flow without any edit to the engine, the QC or the report modules."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import MOBILENET, psnr, shared
from lipsync.models.wav2lip import Wav2Lip


class TintGenerator:
    """A generator with Wav2Lip's contract that paints the lower half of every face blue."""

    contract = Wav2Lip.contract
    loaded: list[str] = []

    def preprocess(self, faces, mels):
        return faces.astype(np.float32) / 255.0, mels.astype(np.float32)

    def forward(self, face_input, mel):
        out = face_input.copy()
        out[:, out.shape[1] // 2:] = (0.9, 0.2, 0.1)  # BGR
        return out.transpose(0, 3, 1, 2)

    def postprocess(self, raw):
        return (raw.transpose(0, 2, 3, 1) * 255).astype(np.uint8)


def _voice_level(face):
    """A weight-free QC metric: the level of the voice under the face's frames (dBFS)."""
    rms = float(np.sqrt(np.mean(np.square(face.audio)))) if len(face.audio) else 0.0
    return {"voice_dbfs": round(20 * np.log10(max(rms, 1e-6)), 2), "face_frames": face.track.frames.duration}


@pytest.fixture
def seams(monkeypatch):
    from lipsync.qc import metrics
    from lipsync.render import generator

    def load(path, device):
        TintGenerator.loaded.append(str(path))
        return TintGenerator()

    monkeypatch.setitem(generator.GENERATORS, "tint", load)
    metric = metrics.QCMetric("voice_level", ("voice_dbfs", "face_frames"), measure=_voice_level)
    metrics.register_metric(metric)
    yield
    metrics.unregister_metric("voice_level")


def test_a_second_generator_and_metric_run_through_dub_run(tmp_path, seams, model_store):
    if not MOBILENET.exists():
        pytest.skip("RetinaFace weights missing from ../shared/data/weights")
    from dubcore.manifest import DubJob
    from flows.dub_film import dub_film
    from lipsync.media import FrameReader, probe

    clip = shared("grid-talking-faces", "bbaf2n.mpg")
    weights = tmp_path / "tint.bin"
    weights.write_bytes(b"not a torch file: the tint family reads nothing")
    job = DubJob.model_validate({
        "film": str(clip), "output": str(tmp_path / "out"),
        "dub": {"dialogue": str(shared("grid-talking-faces", "pwij3p.mpg"))},
        "options": {"speakers": "off", "qc": "on", "cache": False, "audio_length_policy": "pad",
                    "lipsync_checkpoint": str(weights), "lipsync_generator": "tint", "lipsync_backend": "local",
                    "lipsync_device": "cpu"},
    })
    result = dub_film(job)
    out = tmp_path / "out" / result["film"]
    assert TintGenerator.loaded and TintGenerator.loaded[-1] == str(weights)

    # The generator drove the face: the lower face turned blue, the rest of the picture kept.
    faces = json.loads((tmp_path / "out" / "faces.json").read_text())
    track = faces["shots"][0]["tracks"][0]
    obs = {o["frame"]: o["box"] for o in track["observations"]} if "observations" in track else None
    src_info = probe(clip)
    blue = 0
    for i, (a, b) in enumerate(zip(FrameReader(clip, info=src_info), FrameReader(out))):
        box = obs.get(i) if obs else None
        if box is None:
            continue
        x1, y1, x2, y2 = (int(v) for v in box)
        mouth = (slice((y1 + y2) // 2 + (y2 - y1) // 8, y2), slice(x1 + (x2 - x1) // 4, x2 - (x2 - x1) // 4))
        blue += int(b[mouth][:, :, 0].mean() > a[mouth][:, :, 0].mean() + 20)
        top = slice(0, max(1, y1 - 30))
        assert psnr(a[top], b[top]) > 40, i
    assert blue > 0.8 * len(obs or {}), blue

    # The metric measured every re-voiced face; report.json, report.csv and report.html carry it.
    qc = json.loads((tmp_path / "out" / "qc" / "report.json").read_text())
    measured = [t for s in qc["shots"] for t in s["tracks"]]
    assert measured and all(t["metrics"]["voice_level"]["face_frames"] > 0 for t in measured)
    assert all(-60 < t["metrics"]["voice_level"]["voice_dbfs"] < 0 for t in measured)
    with open(tmp_path / "out" / "qc" / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert "voice_dbfs" in rows[0] and "face_frames" in rows[0]
    assert all(r["voice_dbfs"] not in ("", None) for r in rows if r["track"])
    assert "voice_level: voice_dbfs" in (tmp_path / "out" / "qc" / "report.html").read_text()


def test_metric_registry_refuses_clashes():
    from lipsync.qc import metrics

    with pytest.raises(ValueError, match="built in"):
        metrics.register_metric(metrics.QCMetric("syncnet_lse", ("x",), measure=_voice_level))
    with pytest.raises(ValueError, match="already the report's"):
        metrics.register_metric(metrics.QCMetric("other", ("lse_d",), measure=_voice_level))
    with pytest.raises(ValueError, match="measure"):
        metrics.register_metric(metrics.QCMetric("other", ("x",)))
    from lipsync.qc.report import CSV_FIELDS, csv_fields

    assert csv_fields() == CSV_FIELDS  # nothing registered: the built-in columns, in their order
