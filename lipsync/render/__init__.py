"""The lip-sync stage: the engine that renders a shot, the jobs and workers that carry shots to it,
the pools that spread them over GPUs and machines, and the cache of rendered shots.

* :mod:`.params` -- what a render is asked (crop, blend, batch; drives) and what it reports;
* :mod:`.generator` -- the generator seam (Wav2Lip one implementation), the parity dump;
* :mod:`.audio` -- each track's audio and the mel window of each frame;
* :mod:`.blend` -- crop, blend mask, colour match, paste in the source's own planes;
* :mod:`.engine` -- :class:`LipSyncEngine`: decode, generate, paste, encode, overlapped;
* :mod:`.job` -- :class:`ShotJob` (picklable) and :class:`LipSyncWorker` (a model loaded once);
* :mod:`.pool` -- Ray actors per GPU, or in-process;
* :mod:`.cache` -- rendered shots by content key.
"""

from .job import LipSyncWorker, ShotJob, render_summary
from .params import BlendParams, CropParams, LipSyncOutOfMemoryError, LipSyncParams, ShotRender, TrackDrive, TrackRender

__all__ = ["BlendParams", "CropParams", "LipSyncOutOfMemoryError", "LipSyncParams", "LipSyncWorker", "ShotJob",
           "ShotRender", "TrackDrive", "TrackRender", "render_summary"]
