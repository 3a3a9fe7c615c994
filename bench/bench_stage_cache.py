"""Stage cache benchmark: a job run again after an edit of its `casting` section.

Runs the `dub-film` flow three times on the demo sample (two GRID speakers taking turns,
dubbed; ``dub/sample.py``), the film repeated ``--repeat`` times, with one render/stage
cache folder:

  1. the job as it is (empty cache: every stage runs);
  2. the same job with one face excluded in ``casting.tracks`` (the review loop's edit):
     shots, faces, active speakers and both diarizations come from the stage cache,
     casting runs again;
  3. the job of run 2 again (everything cached).

It prints the wall time of each run, its ratio to the first, the stage timings of the
run report and which analysis tasks were Cached.  Without Wav2Lip weights the shots
pass through (``--checkpoint`` to lip-sync with a model-store entry or a path).

    .venv/bin/python bench/bench_stage_cache.py --repeat 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
_HOME = tempfile.mkdtemp(prefix="bench-stage-cache-prefect-")
os.environ.setdefault("PREFECT_HOME", _HOME)
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

STAGES = ("detect-shots-", "faces shot-", "diarize-original-", "dub-voices-", "active-speakers-", "cast-")


def _repeat(job, times: int, folder: Path):  # type: ignore[no-untyped-def]
    """The sample's film and stems, each ``times`` times end to end (the seams may or may not be detected as cuts)."""
    if times == 1:
        return job
    import numpy as np
    import soundfile as sf

    film = folder / "film.x{}.mp4".format(times)
    lst = folder / "films.txt"
    lst.write_text("".join(f"file '{job.film}'\n" for _ in range(times)))
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(lst),
                    "-c", "copy", str(film)], check=True)
    def tile(path: str) -> str:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        dst = Path(path).with_name(Path(path).stem + f".x{times}.wav")
        sf.write(str(dst), np.concatenate([data] * times), rate, subtype="PCM_24")
        return str(dst)
    dub = job.dub.model_copy(update={"characters": tuple(c.model_copy(update={"path": tile(c.path)}) for c in job.dub.characters),
                                     "me": tile(job.dub.me)})
    return job.model_copy(update={"film": str(film), "dub": dub,
                                  "options": job.options.model_copy(update={"audio_length_policy": "pad"})})


def _states(flow_run_id) -> dict[str, str]:  # type: ignore[no-untyped-def]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    out = {}
    for s in STAGES:
        names = sorted(r.state.name for r in runs if r.name.startswith(s))
        out[s.rstrip("- ")] = ",".join(f"{names.count(n)}x{n}" for n in sorted(set(names))) or "-"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=4, help="The 6 s demo film this many times (default 4: 24 s, 4 shots).")
    ap.add_argument("--checkpoint", default=None, help="Wav2Lip weights (model-store entry or path) to lip-sync too.")
    ap.add_argument("--keep", action="store_true", help="Keep the work folder.")
    args = ap.parse_args()

    from dub.sample import make_demo_job, shared_data
    from lipsync import store

    data = shared_data()
    if data is None:
        sys.exit("bench_stage_cache: needs ../shared/data (the demo sample)")
    work = Path(tempfile.mkdtemp(prefix="bench-stage-cache-"))
    if "DUB_MODEL_STORE" not in os.environ:
        models = work / "models"
        os.environ["DUB_MODEL_STORE"] = str(models)
        store.pull("retinaface_mobilenet0.25", models, source=data / "weights/retinaface-mobilenet0.25/mobilenet0.25_Final.pth")
        store.pull("light_asd", models, source=data / "weights/light-asd/pretrain_AVA_CVPR.model")
    try:
        from flows.dub_film import dub_film

        base = _repeat(make_demo_job(work / "sample", data), args.repeat, work / "sample")
        options = {"cache_dir": str(work / "cache")}
        if args.checkpoint:
            options["lipsync_checkpoint"] = args.checkpoint
        base = base.model_copy(update={"options": base.options.model_copy(update=options)})
        runs = []
        casting = None
        for i, label in enumerate(("1 first run (empty cache)", "2 casting edited", "3 same job again")):
            job = base.model_copy(update={"output": str(work / f"out{i + 1}")})
            if casting is not None:
                job = job.model_copy(update={"casting": casting})
            t0 = time.perf_counter()
            state = dub_film(job, return_state=True)
            wall = time.perf_counter() - t0
            if not state.is_completed():
                raise SystemExit(f"run {i + 1} failed: {state}")
            report = json.loads((work / f"out{i + 1}" / "report.json").read_text())
            runs.append((label, wall, report.get("timings_seconds", {}), _states(state.state_details.flow_run_id)))
            if casting is None:  # the operator's edit: the first face of the film is never lip-synced
                faces = json.loads((work / "out1" / "faces.json").read_text())
                first = sorted(t["id"] for s in faces["shots"] for t in s["tracks"])[0]
                from dubcore.manifest import Casting

                casting = Casting.model_validate({"tracks": {first: None}})
        frames = report["output"]["frame_count"]
        print(f"stage cache: demo film x{args.repeat} ({frames} frames), "
              f"{'lip-sync ' + args.checkpoint if args.checkpoint else 'no lip-sync (shots pass through)'}; "
              f"torch threads {__import__('torch').get_num_threads()}, {os.cpu_count()} CPU(s); casting edit {casting.model_dump(mode='json')}")
        first_wall = runs[0][1]
        for label, wall, timings, states in runs:
            stages = " ".join(f"{k} {v:.1f}" for k, v in timings.items() if v >= 0.05)
            print(f"  run {label:<26} wall {wall:7.1f} s  ({wall / first_wall:5.2f} x first)   stages [s]: {stages}")
            print("      tasks: " + "  ".join(f"{k}={v}" for k, v in states.items()))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(_HOME, ignore_errors=True)


if __name__ == "__main__":
    main()
