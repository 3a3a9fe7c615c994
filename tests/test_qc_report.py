"""QC verdicts, report files, and the HTML report rendered by headless Chromium.

The 3-shot film: three real GRID speakers cut one after another (75 frames each).
`dub qc` measures each face against the film's own audio with Light-ASD and with
SyncNet (random weights in the published format: the numbers are meaningless,
the code path and the report are real).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import LIGHT_ASD, shared
from dub.cli import app
from dubcore.manifest import JobOptions
from lipsync.qc.report import QCThresholds, verdict

runner = CliRunner()


# --------------------------------------------------------------------------- verdict rules


def test_manifest_threshold_defaults_are_the_library_defaults():
    assert JobOptions().qc_thresholds.model_dump() == QCThresholds().to_dict()


def test_verdict_relative_to_the_original():
    ref = {"lse_d": 7.0, "lse_c": 7.5, "offset": 0}
    assert verdict({"lse_d": 7.2, "lse_c": 6.8, "offset": 1}, ref, None)[0] == "pass"  # within 1 point, |offset| 1
    assert verdict({"lse_d": 7.2, "lse_c": 6.4, "offset": 0}, ref, None)[0] == "review"  # 1.1 below
    assert verdict({"lse_d": 7.6, "lse_c": 7.5, "offset": 0}, ref, None)[0] == "review"  # LSE-D 0.6 above
    assert verdict({"lse_d": 7.0, "lse_c": 4.4, "offset": 0}, ref, None)[0] == "fail"  # 3.1 below
    v, reasons = verdict({"lse_d": 7.0, "lse_c": 7.5, "offset": 4}, ref, None)
    assert v == "fail" and "offset +4" in reasons[0]


def test_verdict_without_reference_and_with_light_asd_only():
    assert verdict({"lse_d": 7.0, "lse_c": 6.5, "offset": 0}, None, None)[0] == "pass"
    assert verdict({"lse_d": 8.5, "lse_c": 6.5, "offset": 0}, None, None)[0] == "review"
    assert verdict({"lse_d": 9.0, "lse_c": 2.0, "offset": 0}, None, None)[0] == "fail"
    # Without SyncNet nothing passes: the weight-free estimate can flag a clear offset, never vouch for sync.
    est = {"method": "light-asd+mouth-envelope", "asd_offset": 0, "mouth_offset": 0, "agree": True}
    v, reasons = verdict(None, None, {**est, "offset": 0, "confidence": 0.9})
    assert v == "unverified" and "no SyncNet weights" in reasons[0] and "estimated offset +0" in reasons[0]
    assert verdict(None, None, {**est, "offset": 1, "confidence": 0.15})[0] == "unverified"
    assert verdict(None, None, {**est, "offset": 2, "confidence": 0.9})[0] == "unverified"  # within the estimate's error of 1
    assert verdict(None, None, {**est, "offset": 3, "confidence": 0.9})[0] == "review"
    v, reasons = verdict(None, None, {**est, "offset": -5, "confidence": 0.9})
    assert v == "fail" and "-5 frames" in reasons[0]
    assert verdict(None, None, {**est, "offset": -5, "confidence": 0.05})[0] == "unverified"  # not clear: low confidence
    v, reasons = verdict(None, None, {**est, "offset": -5, "confidence": 0.9, "agree": False, "asd_offset": 0, "mouth_offset": -5})
    assert v == "unverified" and "disagree" in reasons[0]  # not clear: the two signals disagree
    assert verdict(None, None, {"offset": 1, "confidence": 0.8})[0] == "unverified"  # a Light-ASD-only record (no method)
    assert verdict(None, None, None) == ("unverified", ("no sync measurement",))
    strict = QCThresholds(max_offset_pass=0, max_offset_fail=1)
    assert verdict(None, None, {**est, "offset": 2, "confidence": 0.8}, strict)[0] == "fail"


# --------------------------------------------------------------------------- a 3-shot film through `dub qc`


@pytest.fixture(scope="module")
def three_speakers(tmp_path_factory, model_store):
    if not LIGHT_ASD.exists():
        pytest.skip(f"Light-ASD weights missing: {LIGHT_ASD}")
    import torch

    from lipsync.models.syncnet import SyncNet

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("qc3")
    clips = [shared("grid-talking-faces", n) for n in ("bbaf2n.mpg", "lwbsza.mpg", "sbia1a.mpg")]
    film = folder / "three.mkv"
    inputs = [a for c in clips for a in ("-i", str(c))]
    graph = "".join(f"[{i}:v][{i}:a]" for i in range(3)) + "concat=n=3:v=1:a=1[v][a]"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph, "-map", "[v]", "-map", "[a]",
                    "-c:v", "libx264", "-crf", "14", "-r", "25", "-c:a", "pcm_s16le", "-ar", "16000", "-ac", "1", str(film)], check=True)
    torch.manual_seed(0)
    ckpt = folder / "syncnet_random.model"
    torch.save(SyncNet().state_dict(), ckpt)  # the published file is a plain state dict
    out = folder / "qc"
    res = runner.invoke(app, ["qc", str(film), str(film), "--out", str(out), "--syncnet", str(ckpt), "--store", str(model_store)])
    assert res.exit_code == 0, res.output
    return {"film": film, "out": out, "output": res.output}


def test_dub_qc_writes_json_csv_and_html(three_speakers):
    out = three_speakers["out"]
    data = json.loads((out / "report.json").read_text())
    assert data["schema"] == "dub-film/qc@1"
    assert [s["frames"] for s in data["shots"]] == [[0, 75], [75, 150], [150, 225]]
    assert [s["start_timecode"] for s in data["shots"]] == ["00:00:00:00", "00:00:03:00", "00:00:06:00"]
    for shot in data["shots"]:
        (track,) = shot["tracks"]
        assert len(track["lse"]["mdist"]) == 31 and -15 <= track["lse"]["offset"] <= 15
        assert len(track["lse"]["framewise_conf"]) == 75 - 5  # syncnet_python: min_length - 5
        assert len(track["asd"]["curve"]) == 31
        assert track["verdict"] in ("pass", "review", "fail") and shot["verdict"] == track["verdict"]
        assert shot["status"] == "measured"  # what `dub qc` did: it measured the clip as given, rendered nothing
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [r["shot"] for r in rows] == ["shot-0001", "shot-0002", "shot-0003"]
    assert all(float(r["lse_d"]) >= 0 and r["asd_offset"] != "" for r in rows)
    assert sum(data["summary"].values()) == 3


class _Shots(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self._in_row = 0

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        a = dict(attrs)
        if tag == "tr" and "shot" in (a.get("class") or "").split():
            self.rows.append({"id": a.get("id"), "verdict": a.get("data-verdict"), "img": [], "svg": 0, "polyline": 0})
        elif self.rows and tag == "img":
            self.rows[-1]["img"].append(a.get("src", ""))
        elif self.rows and tag == "svg":
            self.rows[-1]["svg"] += 1
        elif self.rows and tag == "polyline":
            self.rows[-1]["polyline"] += 1


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        pytest.fail("Chromium is not installed: scripts/setup.sh installs it (apt package chromium)")
    return path


def _headless(tmp: Path) -> list[str]:
    return [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic", f"--user-data-dir={tmp / 'profile'}"]


def test_html_report_renders_three_shot_rows_in_headless_chromium(three_speakers, tmp_path):
    import cv2

    page = three_speakers["out"] / "report.html"
    text = page.read_text()
    bare = text.replace("http://www.w3.org/2000/svg", "")  # the SVG namespace is a name, not a fetch
    assert "http://" not in bare and "https://" not in bare and "src='data:" in text  # self-contained
    dom = subprocess.run([*_headless(tmp_path), "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parser = _Shots()
    parser.feed(dom.stdout)
    assert [r["id"] for r in parser.rows] == ["shot-0001", "shot-0002", "shot-0003"]
    for row in parser.rows:
        assert len(row["img"]) == 2 and all(src.startswith("data:image/jpeg;base64,") for src in row["img"])
        assert row["svg"] == 1 and row["polyline"] == 1
    shot = tmp_path / "report.png"
    run = subprocess.run([*_headless(tmp_path), "--window-size=1400,1200", f"--screenshot={shot}", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    img = cv2.imread(str(shot))
    assert img.shape[:2] == (1200, 1400)
    # The thumbnails are there: the GRID clips' blue background fills part of the page.
    b, g, r = (img[..., i].astype(int) for i in range(3))
    blue = (b > r + 40) & (b > g + 10)
    assert blue.mean() > 0.02, blue.mean()


def test_html_sorts_by_verdict_in_the_browser(tmp_path):
    from lipsync.qc.report import QCReport, ShotQC, TrackQC, write_qc_report

    def shot(i: int, v: str) -> ShotQC:
        t = TrackQC(f"shot-000{i}/face-01", "ALICE", (i * 10, i * 10 + 10), 10, {}, None, None, {"offset": 0, "confidence": 1.0}, v, ("x",))
        return ShotQC(f"shot-000{i}", (i * 10, i * 10 + 10), "00:00:00:00", "00:00:00:10", "rendered", None, (t,), v)

    report = QCReport("t", "t.mp4", "25", QCThresholds(),
                      (shot(1, "pass"), shot(2, "fail"), shot(5, "unverified"), shot(3, "review"), shot(4, "fail")))
    page = write_qc_report(tmp_path / "qc", report)["html"]
    order = []
    for url in (page.as_uri(), page.as_uri() + "#sort=verdict"):
        dom = subprocess.run([*_headless(tmp_path), "--dump-dom", url], capture_output=True, text=True, timeout=120)
        assert dom.returncode == 0, dom.stderr[-2000:]
        parser = _Shots()
        parser.feed(dom.stdout)
        order.append([(r["id"], r["verdict"]) for r in parser.rows])
    assert [v for _, v in order[0]] == ["pass", "fail", "unverified", "review", "fail"]  # film order as written
    assert order[1] == [("shot-0002", "fail"), ("shot-0004", "fail"), ("shot-0003", "review"), ("shot-0005", "unverified"),
                        ("shot-0001", "pass")]
    assert "unverified 1" in page.read_text()  # the counts line
