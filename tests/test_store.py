"""Model store: registry completeness, verified pulls, atomicity, error messages."""

from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path

import pytest

from dubcore.schema import read_json
from lipsync import store
from lipsync.store import (
    REGISTRY,
    REQUIRED_META,
    ChecksumError,
    MissingWeightsError,
    UnverifiedWeightsError,
    WeightsEntry,
)

MNET = "retinaface_mobilenet0.25"


def shared_data() -> Path:
    """``/work/shared/data`` seen from ``/work/main/tests/<this file>``."""
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_file(entry: WeightsEntry) -> Path | None:
    """The copy of ``entry``'s file in the shared test data, if there is one."""
    hits = sorted((shared_data() / "weights").glob(f"*/{entry.filename}"))
    return hits[0] if hits else None


@pytest.fixture()
def mnet_file() -> Path:
    path = shared_data() / "weights" / "retinaface-mobilenet0.25" / "mobilenet0.25_Final.pth"
    if not path.is_file():
        pytest.skip(f"shared test data missing: {path}")
    return path


def store_listing(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_entry_is_complete(name: str) -> None:
    e = REGISTRY[name]
    assert e.name == name
    for attr in ("family", "url", "license", "filename"):
        assert getattr(e, attr), f"{name}: empty {attr}"
    assert e.url.startswith("https://")
    if e.meta.get("sha256_unverified"):
        assert e.sha256 is None
    else:
        assert e.sha256 is not None and len(e.sha256) == 64
        assert isinstance(e.size, int) and e.size > 0
    missing = [k for k in REQUIRED_META[e.family] if k not in e.meta]
    assert not missing, f"{name}: meta lacks {missing}"
    if e.family == "retinaface":
        assert len(e.meta["min_sizes"]) == len(e.meta["steps"]) == 3
        assert all(len(s) == e.meta["num_anchors"] for s in e.meta["min_sizes"])
        assert tuple(e.meta["variance"]) == (0.1, 0.2)
        assert len(e.meta["mean"]) == len(e.meta["std"]) == 3


def test_defaults_and_listing() -> None:
    assert store.default_entry("retinaface").name == MNET
    assert store.default_entry("light_asd").name == "light_asd"
    assert [e.name for e in store.list_entries("light_asd")] == ["light_asd", "light_asd_talkset"]
    assert {e.name for e in store.list_entries()} == set(REGISTRY)
    with pytest.raises(store.UnknownWeightsError, match="known: "):
        store.get_entry("nope")


def test_mobilenet_entry_uses_the_1mb_repo_anchors() -> None:
    meta = REGISTRY[MNET].meta
    assert [list(s) for s in meta["min_sizes"]] == [[10, 20], [32, 64], [128, 256]]
    assert list(meta["steps"]) == [8, 16, 32]
    assert (meta["in_channel"], meta["out_channel"]) == (32, 64)
    assert meta["color_order"] == "BGR" and tuple(meta["mean"]) == (104.0, 117.0, 123.0)


def test_entries_are_frozen() -> None:
    e = REGISTRY[MNET]
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.sha256 = "0" * 64  # type: ignore[misc]
    with pytest.raises(TypeError):
        e.meta["steps"] = (1, 2, 3)  # type: ignore[index]
    with pytest.raises(ValueError, match="sha256_unverified"):
        WeightsEntry("x", "retinaface", "https://x", None, None, "MIT", "x.pth", {})


@pytest.mark.parametrize("name", [n for n, e in sorted(REGISTRY.items()) if e.sha256 is not None])
def test_recorded_hashes_match_the_shared_copies(name: str) -> None:
    e = REGISTRY[name]
    path = shared_file(e)
    if path is None:
        pytest.skip(f"{name}: no copy in the shared test data")
    assert path.stat().st_size == e.size
    assert store.sha256_file(path) == e.sha256


# --------------------------------------------------------------------------- store location


def test_store_location_argument_env_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(store.ENV_STORE, raising=False)
    assert store.store_root() == Path("~/.cache/dub-film/models").expanduser()
    monkeypatch.setenv(store.ENV_STORE, str(tmp_path / "env"))
    assert store.path_for(MNET) == tmp_path / "env" / "mobilenet0.25_Final.pth"
    assert store.path_for(MNET, tmp_path / "arg") == tmp_path / "arg" / "mobilenet0.25_Final.pth"
    assert store.store_root(f"file://{tmp_path}/u") == tmp_path / "u"


def test_remote_store_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"s3:// stores are not supported yet.*DUB_MODEL_STORE"):
        store.path_for(MNET, "s3://bucket/models")


# --------------------------------------------------------------------------- pull / verify / resolve


def test_pull_from_local_file_verifies_and_stamps(tmp_path: Path, mnet_file: Path) -> None:
    root = tmp_path / "store"
    path = store.pull(MNET, root, source=mnet_file)
    assert path == root / "mobilenet0.25_Final.pth"
    assert store.sha256_file(path) == REGISTRY[MNET].sha256
    stamp = read_json(root / "mobilenet0.25_Final.pth.json", "models")
    assert stamp["entry"] == MNET and stamp["verified"] is True and stamp["sha256"] == REGISTRY[MNET].sha256
    assert store_listing(root) == ["mobilenet0.25_Final.pth", "mobilenet0.25_Final.pth.json"]
    assert store.resolve(MNET, root) == path
    assert store.verify(MNET, root) == path
    # already present and verified: kept, the (now unreadable) source is not touched
    assert store.pull(MNET, root, source=tmp_path / "does-not-exist") == path


def test_pull_from_file_url(tmp_path: Path, mnet_file: Path) -> None:
    path = store.pull(MNET, tmp_path, source=mnet_file.as_uri())
    assert store.sha256_file(path) == REGISTRY[MNET].sha256


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_source_raises_and_leaves_nothing(tmp_path: Path, mnet_file: Path, damage: str) -> None:
    data = bytearray(mnet_file.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[-100:]
    bad = tmp_path / "bad.pth"
    bad.write_bytes(bytes(data))
    root = tmp_path / "store"
    with pytest.raises(ChecksumError) as info:
        store.pull(MNET, root, source=bad)
    msg = str(info.value)
    assert MNET in msg and str(bad) in msg
    if damage == "flip":
        assert REGISTRY[MNET].sha256 in msg and store.sha256_file(bad) in msg
    else:
        assert str(REGISTRY[MNET].size) in msg
    assert store_listing(root) == []  # no file, no temporary, no stamp


def test_missing_source_is_a_missing_weights_error(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="--source"):
        store.pull(MNET, tmp_path / "store", source=tmp_path / "nowhere.pth")
    assert store_listing(tmp_path / "store") == []


def test_missing_weights_message(tmp_path: Path) -> None:
    root = tmp_path / "empty-store"
    with pytest.raises(MissingWeightsError) as info:
        store.resolve(MNET, root)
    msg = str(info.value)
    assert MNET in msg
    assert str(root / "mobilenet0.25_Final.pth") in msg
    assert f"dub models pull {MNET}" in msg


def test_resolve_rehashes_a_changed_file(tmp_path: Path, mnet_file: Path) -> None:
    path = store.pull(MNET, tmp_path, source=mnet_file)
    data = bytearray(path.read_bytes())
    data[1000] ^= 0x01
    path.write_bytes(bytes(data))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ChecksumError) as info:
        store.resolve(MNET, tmp_path)
    msg = str(info.value)
    assert str(path) in msg and REGISTRY[MNET].sha256 in msg and store.sha256_file(path) in msg


def test_resolve_checks_and_stamps_a_file_copied_in_by_hand(tmp_path: Path, mnet_file: Path) -> None:
    (tmp_path / "mobilenet0.25_Final.pth").write_bytes(mnet_file.read_bytes())
    assert store.resolve(MNET, tmp_path) == tmp_path / "mobilenet0.25_Final.pth"
    assert (tmp_path / "mobilenet0.25_Final.pth.json").is_file()


def test_resolve_accepts_a_path_and_rejects_nonsense(tmp_path: Path, mnet_file: Path) -> None:
    assert store.resolve(mnet_file) == mnet_file
    with pytest.raises(store.UnknownWeightsError, match="neither a known model"):
        store.resolve(tmp_path / "nothing.pth")


# --------------------------------------------------------------------------- archives and unverified entries


def _fake_resnet_zip(tmp_path: Path, payload: bytes) -> Path:
    e = REGISTRY["retinaface_resnet50"]
    archive = tmp_path / Path(e.url).name
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(e.meta["archive_member"], payload)
    return archive


def test_unverified_entry_needs_explicit_consent(tmp_path: Path) -> None:
    archive = _fake_resnet_zip(tmp_path, b"not really a checkpoint")
    with pytest.raises(UnverifiedWeightsError) as info:
        store.pull("retinaface_resnet50", tmp_path / "store", source=archive)
    assert "allow_unverified=True" in str(info.value) and "--allow-unverified" in str(info.value)
    assert store_listing(tmp_path / "store") == []


def test_zip_entry_is_unpacked_and_trusted_on_first_use(tmp_path: Path) -> None:
    payload = os.urandom(4096)
    archive = _fake_resnet_zip(tmp_path, payload)
    root = tmp_path / "store"
    path = store.pull("retinaface_resnet50", root, source=archive, allow_unverified=True)
    assert path.name == "retinaface_resnet50_2020-07-20.pth" and path.read_bytes() == payload
    assert store_listing(root) == [path.name, path.name + ".json"]  # the archive itself is not kept
    stamp = read_json(Path(str(path) + ".json"), "models")
    assert stamp["verified"] is False
    assert stamp["download_sha256"] == store.sha256_file(archive)
    assert stamp["sha256"] == store.sha256_file(path)
    assert stamp["url_hash_prefix_match"] in (True, False)
    assert store.resolve("retinaface_resnet50", root) == path
    # verify() checks against the hash recorded at pull time
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ChecksumError):
        store.verify("retinaface_resnet50", root)


def test_zip_without_the_expected_member_is_rejected(tmp_path: Path) -> None:
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.pth", b"1")
        zf.writestr("b.pth", b"2")
    root = tmp_path / "store"
    with pytest.raises(ChecksumError, match="retinaface_resnet50_2020-07-20.pth"):
        store.pull("retinaface_resnet50", root, source=archive, allow_unverified=True)
    assert store_listing(root) == []
