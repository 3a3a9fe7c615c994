"""Job manifests: versioned, strict, relative paths resolved, errors that name the file and key."""

import pytest
import yaml

from dubcore.manifest import DubJob, ManifestError, load_manifest, write_manifest


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


GOOD = {
    "schema": "dub-film/manifest@1",
    "film": "film.mp4",
    "dub": {"language": "es", "characters": [{"name": "ALICE", "path": "stems/alice.wav"}], "me": "me.wav"},
}


def test_load_resolves_relative_paths(tmp_path):
    job = load_manifest(_write(tmp_path / "job.yaml", GOOD))
    assert job.film == str(tmp_path / "film.mp4")
    assert job.dub.characters[0].path == str(tmp_path / "stems" / "alice.wav")
    assert [r for r, _ in job.dub.files()] == ["character:ALICE", "me"]
    assert job.options.audio_length_policy == "strict"


def test_round_trip(tmp_path):
    job = load_manifest(_write(tmp_path / "job.yaml", GOOD))
    write_manifest(tmp_path / "again.yaml", job)
    assert load_manifest(tmp_path / "again.yaml") == job
    assert yaml.safe_load((tmp_path / "again.yaml").read_text())["schema"] == "dub-film/manifest@1"


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d.update(colour="red"), "unknown key 'colour'"),
        (lambda d: d["dub"].update(stems="x"), "unknown key 'dub.stems'"),
        (lambda d: d.update(options={"crf": 10, "turbo": True}), "unknown key 'options.turbo'"),
        (lambda d: d.pop("film"), "missing field 'film'"),
        (lambda d: d["dub"]["characters"][0].pop("path"), "missing field 'dub.characters.0.path'"),
        (lambda d: d.update(dub={"me": "me.wav"}), "dub needs 'dialogue', 'characters' or 'mix'"),
        (lambda d: d.pop("schema"), "no 'schema' field"),
        (lambda d: d.update(schema="dub-film/manifest@9"), "newer than this dub-film understands"),
        (lambda d: d.update(options={"audio_length_policy": "stretch"}), "options.audio_length_policy"),
    ],
)
def test_invalid_manifests_are_explained(tmp_path, mutate, message):
    import copy

    data = copy.deepcopy(GOOD)
    mutate(data)
    path = _write(tmp_path / "bad.yaml", data)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_unreadable_manifest(tmp_path):
    with pytest.raises(ManifestError, match="no such manifest"):
        load_manifest(tmp_path / "nope.yaml")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ManifestError, match="broken.json: not valid JSON"):
        load_manifest(tmp_path / "broken.json")


def test_flow_parameter_schema_has_descriptions():
    schema = DubJob.model_json_schema()
    assert "film" in schema["required"] and "dub" in schema["required"]
    assert schema["properties"]["film"]["description"]
