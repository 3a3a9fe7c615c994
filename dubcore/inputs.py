"""Inputs of a job on local disk: every remote file of the manifest fetched (and verified) first.

The flow calls :func:`fetch_inputs` before anything else, so a manifest that points at
a missing object, an unreachable bucket or wrong credentials fail the run at once,
with the URI in the message, and nothing is written at the output location.
"""

from __future__ import annotations

from pathlib import Path

from .manifest import DubJob
from .storage import open_storage, scheme_of


def is_remote(uri: str | None) -> bool:
    return uri is not None and scheme_of(uri) != "file"


def fetch(uri: str, workdir: Path) -> str:
    """A local path holding ``uri``: itself when local, else a verified download in ``workdir``."""
    if not is_remote(uri):
        return uri
    return str(open_storage(uri).local_path(uri, workdir))


def fetch_inputs(job: DubJob, workdir: Path) -> DubJob:
    """Copy of ``job`` whose film and dub tracks are local files (remote ones downloaded into ``workdir``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    dub = job.dub.model_copy(
        update={
            "dialogue": job.dub.dialogue and fetch(job.dub.dialogue, workdir),
            "me": job.dub.me and fetch(job.dub.me, workdir),
            "mix": job.dub.mix and fetch(job.dub.mix, workdir),
            "characters": tuple(c.model_copy(update={"path": fetch(c.path, workdir)}) for c in job.dub.characters),
        }
    )
    return job.model_copy(update={"film": fetch(job.film, workdir), "dub": dub})


def check_output(uri: str) -> None:
    """Fail early when the output location cannot be reached (unreachable bucket, wrong credentials)."""
    if is_remote(uri):
        open_storage(uri).exists(uri.rstrip("/") + "/_SUCCESS")
