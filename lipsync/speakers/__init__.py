"""Speakers: who speaks when (diarization, RTTM, DER), who speaks on screen (active speaker
detection), and which dubbed voice drives which face (casting).

Import the submodules directly (``lipsync.speakers.diarize``, ``.asd``, ``.match``): each
loads its own models and packages only when imported.
"""
