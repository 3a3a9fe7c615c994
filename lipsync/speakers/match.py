"""Casting, picture first: which face speaks in the original, as which character, dubbed by which voice.

The evidence, strongest first:

1. **The picture decides who speaks in a shot.**  A frame where speech is heard
   (any diarized turn of the original) belongs to the face whose lips move with
   it: among the shot's castable face tracks visible in that frame, the one with
   the highest Light-ASD score (median-filtered as :mod:`lipsync.speakers.asd`
   does), provided that score is above the model's own decision boundary
   (:class:`~lipsync.speakers.asd.AsdParams`, logit 0).  Runs shorter than the
   ASD's minimum speech duration are dropped.  A face that wins no frame has no
   speaking evidence and is **never driven** (unless the operator names it in
   ``casting.tracks``); a face whose quality check failed
   (:mod:`lipsync.faces.quality`, ``castable=False``) takes no part either.
2. **Diarization links those faces across shots into characters.**  Diarized
   speaker ``s`` is the voice of face ``t`` when, over the frames where ``s``
   talks while ``t`` is on screen, ``t`` is the speaking face more often than
   not (``identity_ratio``, a majority).  Faces and speakers joined this way form
   one character (so a voice that diarization split in two, or one face seen in
   several shots, stays one character).  Links are taken strongest first and a
   link that would put two faces *of the same shot* into one character is
   refused: the picture proved they are two people, whatever diarization says
   (the weaker face becomes a character of its own, flagged for review).  A
   speaking face always keeps its best-overlapping speaker, even below the
   majority, with a low confidence.
3. **Dubbed voices go to characters** by the time overlap of each voice's speech
   with the character's lines: the frames where its faces speak, plus its
   speakers' turns where no other character's face is speaking (so a voice is
   not credited with lines the picture gives to someone else).  The Hungarian
   algorithm assigns one voice per character; when every voice comes from one
   diarized dialogue stem (same audio), a further voice may join the character it
   overlaps most, since it plays the same audio.  Speakers linked to no face are
   off-screen characters: a voice that matches one of them drives no face.

The operator's word wins: ``overrides`` (dubbed voice -> original speaker) and
``track_overrides`` (face track -> original speaker, or None: never lip-sync)
are taken as given before the rest is solved.

Every track gets a :class:`Decision`: the character and voice it speaks with (or
why not), a **confidence** in [0, 1] and a **reason** in words.  Confidence is the
weakest link of the chain: speaking (mean over the face's speaking frames of
``p * (1 - q)``, ``p`` the face's speaking probability and ``q`` the strongest
other visible face's), identity (the ratio of step 2) and voice (the overlap of
step 3).  A decision below ``review_below`` (0.5: the evidence is no better than
a coin) or contradicted by other evidence (two faces both plausible, a speaking
face with no voice, a weak track whose lips move) is marked ``review``.

Where the code lives: :func:`cast` here; the records (:class:`CastingParams`,
:class:`TrackLink`, :class:`DubLink`, :class:`CharacterGroup`,
:class:`Decision`, :class:`Casting`) in :mod:`lipsync.speakers.match_records`;
the frame masks, the speaking face (step 1) and the character union-find in
:mod:`lipsync.speakers.match_evidence`.  Every public name is importable from
this module.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from dubcore.records import FaceTrack, Shot, SpeakerTurn

from .match_evidence import _Groups, _sigmoid, _speaking_faces, drop_short_runs, ranges_of, span_frames, turn_frames
from .match_records import Casting, CastingParams, CharacterGroup, Decision, DubLink, TrackLink

__all__ = [
    "Casting",
    "CastingParams",
    "CharacterGroup",
    "Decision",
    "DubLink",
    "TrackLink",
    "cast",
    "drop_short_runs",
    "link_tracks",
    "match_dub",
    "ranges_of",
    "span_frames",
    "turn_frames",
]


def cast(
    shots: Sequence[Shot],
    tracks: Sequence[FaceTrack],
    scores: Mapping[str, np.ndarray],
    turns: Sequence[SpeakerTurn],
    dub_activity: Mapping[str, Sequence[tuple[int, int]]],
    fps: Fraction,
    frame_count: int,
    *,
    overrides: Mapping[str, str] | None = None,
    track_overrides: Mapping[str, str | None] | None = None,
    castable: Mapping[str, bool] | None = None,
    weak_reasons: Mapping[str, str] | None = None,
    shared_audio: bool = False,
    params: CastingParams = CastingParams(),
) -> Casting:
    """Cast the film (see the module docstring).

    ``scores[track_id]`` holds one Light-ASD logit per frame of the track;
    ``dub_activity[voice]`` the half-open sample ranges (at the turns' rate) where
    each dubbed voice speaks; ``castable[track_id]`` False for a track that failed
    the face quality check (``weak_reasons`` says why); ``shared_audio`` True when
    all voices play one dialogue stem."""
    fps = Fraction(fps)
    overrides = dict(overrides or {})
    fixed = dict(track_overrides or {})
    castable = dict(castable or {})
    weak_reasons = dict(weak_reasons or {})
    masks = turn_frames(turns, fps, frame_count)
    speakers_all = sorted(masks)
    speech = np.zeros(frame_count, bool)
    for m in masks.values():
        speech |= m
    rate = next((t.sample_rate for t in turns), 16000)
    min_len = params.asd.min_speech_frames(fps)
    shot_ids = {s.id for s in shots}
    tracks = [t for t in tracks if t.shot_id in shot_ids]
    by_id = {t.id: t for t in tracks}

    competing = {t.id for t in tracks if (castable.get(t.id, True) and t.id not in fixed) or fixed.get(t.id) is not None}
    faces = _speaking_faces(shots, tracks, scores, speech, competing, fps, params)

    # Step 2: characters.
    groups = _Groups()
    for s in speakers_all:
        groups.add(s)
    for t in tracks:
        groups.add(t.id, t.shot_id, t.id)
    edges: list[tuple[float, str, str, float]] = []  # (weight, track, speaker, ratio)
    ratios: dict[tuple[str, str], float] = {}
    notes: list[str] = []
    for t in tracks:
        if t.id in fixed:
            if fixed[t.id] is not None:
                edges.append((float("inf"), t.id, str(fixed[t.id]), 1.0))
            continue
        f = faces[t.id]
        if t.id not in competing or f.speaking.sum() < min_len:
            continue
        sl = slice(t.frames.start, t.frames.end)
        cand = []
        for s in speakers_all:
            own = masks[s][sl]
            n, k = int(own.sum()), int(np.sum(own & f.speaking))
            if n and k:
                ratios[(t.id, s)] = k / n
                cand.append((k, s, k / n))
        if not cand:
            continue
        cand.sort(reverse=True)
        for k, s, ratio in cand:
            if (k, s, ratio) == cand[0] or (ratio >= params.identity_ratio and k >= min_len):
                edges.append((float(k), t.id, s, ratio))
    edges.sort(key=lambda e: (-e[0], e[1], e[2]))
    refused: dict[str, list[str]] = {}
    for weight, tid, s, ratio in edges:
        shot = groups.conflict(tid, s)
        if shot is not None:
            other = groups.shots[groups.find(s)][shot]
            refused.setdefault(tid, []).append(
                f"diarization gives {s} to both {tid} and {other} in {shot}, but the picture shows two faces speaking: kept apart")
            continue
        groups.union(tid, s)

    members: dict[str, tuple[list[str], list[str]]] = {}
    for node in list(groups.parent):
        root = groups.find(node)
        spk, trk = members.setdefault(root, ([], []))
        (trk if node in by_id else spk).append(node)
    talk = {s: int(masks[s].sum()) for s in speakers_all}
    characters: list[CharacterGroup] = []
    char_of: dict[str, str] = {}
    for root, (spk, trk) in members.items():
        linked = [tid for tid in trk if tid in fixed and fixed[tid] is not None
                  or (tid in competing and tid not in fixed and faces[tid].speaking.sum() >= min_len)]
        if not spk and not linked:
            continue
        spk = sorted(spk, key=lambda s: (-talk[s], s))
        cid = spk[0] if spk else f"face:{linked[0]}"
        characters.append(CharacterGroup(cid, tuple(spk), tuple(sorted(linked))))
        for node in spk + linked:
            char_of[node] = cid
    characters.sort(key=lambda c: (c.id.startswith("face:"), c.id))
    for c in characters:
        if len(c.speakers) > 1 and c.tracks:
            notes.append(f"{', '.join(c.speakers)} speak through the same face ({', '.join(c.tracks)}): one character {c.id}")

    # The frames where each track speaks, as its link will say: where its character's voice talks and its
    # lips move (the picture chose the face, diarization says when that voice is heard).  A character with
    # no diarized voice of its own keeps the frames the picture gave it.
    boundary = params.asd.threshold
    talk_of: dict[str, np.ndarray] = {}
    for c in characters:
        m = np.zeros(frame_count, bool)
        for s in c.speakers:
            m |= masks[s]
        talk_of[c.id] = m
    group_of = {c.id: c for c in characters}
    speaking: dict[str, np.ndarray] = {}
    for c in characters:
        for tid in c.tracks:
            t = by_id[tid]
            sl = slice(t.frames.start, t.frames.end)
            if tid in fixed:
                speaking[tid] = talk_of[c.id][sl].copy()
            elif c.speakers:
                speaking[tid] = drop_short_runs(talk_of[c.id][sl] & (faces[tid].smoothed > boundary), min_len)
            else:
                speaking[tid] = faces[tid].speaking
    # How sure: p (this face speaks) x (1 - q), q the strongest rival face there; a face of another
    # character whose voice is silent at that frame is no rival.
    support: dict[str, tuple[float, int, tuple[str, ...]]] = {}
    for tid, m in speaking.items():
        t, cid = by_id[tid], char_of[tid]
        q = np.zeros(t.frames.duration)
        rivals = []
        for u in tracks:
            if u.id == tid or u.shot_id != t.shot_id or u.id not in competing:
                continue
            a, b = max(t.frames.start, u.frames.start), min(t.frames.end, u.frames.end)
            if a >= b:
                continue
            pu = _sigmoid(faces[u.id].smoothed[a - u.frames.start : b - u.frames.start])
            cu = char_of.get(u.id)
            if cu is not None and cu != cid and group_of[cu].speakers:
                pu = pu * talk_of[cu][a:b]
            q[a - t.frames.start : b - t.frames.start] = np.maximum(q[a - t.frames.start : b - t.frames.start], pu)
            if np.any(m[a - t.frames.start : b - t.frames.start] & (pu > 0.5)):
                rivals.append(u.id)
        p = _sigmoid(faces[tid].smoothed)
        conf = float(np.mean(p[m] * (1.0 - q[m]))) if m.any() else 0.0
        support[tid] = (conf, int(np.sum(m & (q > 0.5))), tuple(rivals))
    # Each character's lines: its faces' speaking frames, plus its speakers' turns not given to another face.
    picture = {c.id: np.zeros(frame_count, bool) for c in characters}
    for c in characters:
        for tid in c.tracks:
            t = by_id[tid]
            picture[c.id][t.frames.start : t.frames.end] |= speaking[tid]
    lines: dict[str, np.ndarray] = {}
    for c in characters:
        m = picture[c.id].copy()
        taken = np.zeros(frame_count, bool)
        for other in characters:
            if other.id != c.id:
                taken |= picture[other.id]
        for s in c.speakers:
            m |= masks[s] & ~taken
        lines[c.id] = m

    # Step 3: voices.
    dub_links: list[DubLink] = []
    voice_masks = {r: span_frames(sp, rate, fps, frame_count) for r, sp in dub_activity.items()}
    taken_chars: set[str] = set()
    for role, speaker in overrides.items():
        cid = char_of.get(speaker, speaker)
        dub_links.append(DubLink(role, cid, 1.0, "override"))
        taken_chars.add(cid)
    roles = [r for r in dub_activity if r not in overrides]
    open_chars = [c.id for c in characters if c.id not in taken_chars]
    overlap = np.zeros((len(roles), len(open_chars)))
    for i, r in enumerate(roles):
        total = int(voice_masks[r].sum()) or 1
        for j, cid in enumerate(open_chars):
            overlap[i, j] = float(np.sum(voice_masks[r] & lines[cid])) / total
    assigned: set[str] = set()
    if roles and open_chars:
        rows, cols = linear_sum_assignment(-overlap)
        for i, j in zip(rows, cols):
            if overlap[i, j] >= params.min_voice_overlap:
                dub_links.append(DubLink(roles[i], open_chars[j], float(overlap[i, j])))
                assigned.add(roles[i])
        if shared_audio:
            for i, r in enumerate(roles):
                if r not in assigned and overlap.shape[1]:
                    j = int(np.argmax(overlap[i]))
                    if overlap[i, j] >= params.min_voice_overlap:
                        dub_links.append(DubLink(r, open_chars[j], float(overlap[i, j]), "overlap-shared"))
                        assigned.add(r)
    for r in roles:
        if r not in assigned:
            best = f" (best: {overlap[roles.index(r)].max():.0%} of its speech)" if open_chars else ""
            notes.append(f"dub track {r} matches no character: it drives no face{best}")
    voice_of: dict[str, tuple[str, float]] = {}
    for d in sorted(dub_links, key=lambda d: (d.source != "override", -d.overlap)):
        voice_of.setdefault(d.speaker, (d.role, d.overlap))

    # Step 4: links and decisions.
    off = tuple(sorted(c.id for c in characters if not c.on_screen))
    for s in speakers_all:
        if s not in char_of:
            off += (s,)
    notes += [f"speaker {s} is never on screen: left alone" for s in off]
    links: list[TrackLink] = []
    decisions: list[Decision] = []
    for t in tracks:
        f = faces[t.id]
        cid = char_of.get(t.id)
        role, vconf = voice_of.get(cid, (None, 0.0)) if cid else (None, 0.0)
        if t.id in fixed:
            if fixed[t.id] is None:
                decisions.append(Decision(t.id, t.shot_id, None, None, False, 1.0, "operator: never lip-sync this face (casting.tracks)"))
                continue
            link = TrackLink(t.id, t.shot_id, cid or str(fixed[t.id]), 1.0, ranges_of(speaking[t.id], t.frames.start),
                             "override", 1.0, f"operator: this face speaks as {fixed[t.id]} (casting.tracks)")
            links.append(link)
            decisions.append(Decision(t.id, t.shot_id, link.speaker, role, role is not None and bool(link.speaking), 1.0,
                                      link.reason + ("" if role else "; no dubbed voice for it"), role is None))
            continue
        evidence = f"Light-ASD: its lips move with the speech in {f.lips} of {f.heard} frame(s) with speech"
        if not castable.get(t.id, True):
            why = weak_reasons.get(t.id, "failed the face quality check")
            review = f.lips >= min_len
            decisions.append(Decision(t.id, t.shot_id, None, None, False, 1.0 if not review else 0.5,
                                      f"not cast: weak face track ({why}); {evidence}"
                                      + ("; name it in casting.tracks if it is a real face" if review else ""), review))
            continue
        if cid is None:
            if f.lips >= min_len:
                reason = f"not driven: another face is the speaker wherever its lips move ({evidence})"
            else:
                reason = f"not driven: no speaking evidence ({evidence})"
            decisions.append(Decision(t.id, t.shot_id, None, None, False, 1.0, reason))
            continue
        n_speak = int(speaking[t.id].sum())
        group = group_of[cid]
        identity = max((ratios.get((t.id, s), 0.0) for s in group.speakers), default=0.0)
        speak_conf, contested, rivals = support.get(t.id, (0.0, 0, ()))
        parts = [f"speaks in {n_speak} of {f.heard} frame(s) with speech (Light-ASD, confidence {speak_conf:.2f}"
                 + (f"; {contested} frame(s) contested by {', '.join(rivals)})" if contested else "; no other face speaks)")]
        if group.speakers:
            parts.append(f"as {cid}: {identity:.0%} of {'/'.join(group.speakers)}'s lines here are spoken by this face")
        else:
            parts.append(f"as {cid}: no diarized voice of its own")
        parts += refused.get(t.id, [])
        # Another voice this face also speaks in a good part of (but not most of) its lines: one person
        # split by diarization, or someone off screen while this face moves its lips?  Said, not guessed.
        doubtful = [(s, r) for (tid, s), r in ratios.items() if tid == t.id and s not in group.speakers
                    and r >= params.identity_ratio / 2]
        parts += [f"its lips also move in {r:.0%} of {s}'s lines (another character's voice): the same person, "
                  f"or someone off screen? check" for s, r in sorted(doubtful)]
        conf_chain = [speak_conf, identity]
        if role is None:
            parts.append(f"no dubbed voice matches {cid}: not driven")
        elif role in overrides:
            parts.append(f"dubbed by {role} (operator: casting.voices)")
        else:
            parts.append(f"dubbed by {role} ({vconf:.0%} of its speech in {cid}'s lines)")
            conf_chain.append(vconf)
        conf = float(min(conf_chain))
        review = role is None or conf < params.review_below or t.id in refused or bool(doubtful)
        links.append(TrackLink(t.id, t.shot_id, cid, identity, ranges_of(speaking[t.id], t.frames.start), "asd", conf, "; ".join(parts)))
        decisions.append(Decision(t.id, t.shot_id, cid, role, role is not None and n_speak > 0, conf, "; ".join(parts), review))
    for d in decisions:
        if d.review:
            notes.append(f"review {d.track_id}: {d.reason}")
    return Casting(tuple(links), tuple(dub_links), off, tuple(notes), tuple(characters), tuple(decisions))


def link_tracks(
    shots: Sequence[Shot],
    tracks: Sequence[FaceTrack],
    scores: Mapping[str, np.ndarray],
    turns: Sequence[SpeakerTurn],
    fps: Fraction,
    frame_count: int,
    *,
    track_overrides: Mapping[str, str | None] | None = None,
    castable: Mapping[str, bool] | None = None,
    params: CastingParams = CastingParams(),
) -> tuple[TrackLink, ...]:
    """The face links of :func:`cast` alone (no dubbed voices)."""
    return cast(shots, tracks, scores, turns, {}, fps, frame_count, track_overrides=track_overrides,
                castable=castable, params=params).track_links


def match_dub(
    dub_activity: Mapping[str, Sequence[tuple[int, int]]],
    turns: Sequence[SpeakerTurn],
    *,
    overrides: Mapping[str, str] | None = None,
    min_overlap: float = 0.3,
) -> tuple[DubLink, ...]:
    """Dubbed voices to diarized speakers by speech overlap alone (samples at the turns' rate), one each.

    The casting itself matches voices to *characters* (:func:`cast`); this is the
    voice-only view, e.g. to compare two diarizations."""
    overrides = dict(overrides or {})
    links = [DubLink(role, speaker, 1.0, "override") for role, speaker in overrides.items()]
    roles = [r for r in dub_activity if r not in overrides]
    taken = set(overrides.values())
    speakers = sorted({t.speaker for t in turns} - taken)
    if not roles or not speakers:
        return tuple(links)
    by_speaker: dict[str, list[tuple[int, int]]] = {s: [] for s in speakers}
    for t in turns:
        if t.speaker in by_speaker:
            by_speaker[t.speaker].append((t.start_sample, t.end_sample))
    overlap = np.zeros((len(roles), len(speakers)))
    for i, role in enumerate(roles):
        spans = dub_activity[role]
        total = sum(b - a for a, b in spans) or 1
        for j, s in enumerate(speakers):
            inter = sum(max(0, min(b, d) - max(a, c)) for a, b in spans for c, d in by_speaker[s])
            overlap[i, j] = inter / total
    rows, cols = linear_sum_assignment(-overlap)
    for i, j in zip(rows, cols):
        if overlap[i, j] >= min_overlap:
            links.append(DubLink(roles[i], speakers[j], float(overlap[i, j])))
    return tuple(links)
