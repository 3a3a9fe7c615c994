"""Model store: the checkpoints dub-film uses, where they live, how they are fetched.

In the style of torchvision's weights API every checkpoint is a frozen
:class:`WeightsEntry` -- name, family, url, sha256, size, license, file name and a
``meta`` mapping with everything needed to *use* the file (input normalisation,
anchors, channels, file format).  :data:`REGISTRY` holds them by name and
:data:`DEFAULTS` names the default entry of each family.

Files live flat in a *store* directory chosen, in this order, by the ``store``
argument, the ``DUB_MODEL_STORE`` environment variable, or
``~/.cache/dub-film/models``.

Contracts:

* :func:`pull` never leaves a half-written file: it downloads (or copies, with
  ``source=``) into a temporary name in the store directory, checks size and
  sha256, unpacks archives, and only then ``os.replace``-s the file into place.
  On any error nothing new is left in the store.
* Next to every pulled file a stamp ``<filename>.json`` (a versioned
  ``dub-film/models`` file) records the hash of the stored file, its size and
  mtime.  :func:`resolve` trusts a file whose stamp still matches its size and
  mtime ("verified once"), and re-hashes it otherwise.
* An entry without a recorded sha256 (``meta["sha256_unverified"]``) is only
  pulled with ``allow_unverified=True``; its hash is then recorded on first use.

Layout: :mod:`.registry` (the entries, :data:`REGISTRY`, :data:`DEFAULTS`, look-ups),
:mod:`.fetch` (the store folder, hashing, :func:`pull`, :func:`verify`, :func:`resolve`) and
:mod:`.errors`; every name is re-exported here, so ``from lipsync.store import X`` is the
way to use them.

The store is local today.  :func:`_open_store` is the single place that turns a
store argument into a storage object, so an object store (``s3://...``) can be
plugged in later without touching the callers.
"""

from __future__ import annotations

from .errors import ChecksumError, MissingWeightsError, StoreError, UnknownWeightsError, UnverifiedWeightsError
from .fetch import (
    DEFAULT_STORE,  # noqa: F401 - public in the single-module store
    ENV_STORE,
    LocalStore,
    path_for,
    pull,
    resolve,
    sha256_file,
    store_root,
    verify,
)
from .registry import (
    _FID_META,  # noqa: F401 - the FID entry's meta, read by tests/test_fid.py
    DEFAULTS,
    REGISTRY,
    REQUIRED_META,
    WeightsEntry,
    default_entry,
    entry_for,
    get_entry,
    list_entries,
)

__all__ = [
    "ChecksumError",
    "DEFAULTS",
    "ENV_STORE",
    "LocalStore",
    "MissingWeightsError",
    "REGISTRY",
    "REQUIRED_META",
    "StoreError",
    "UnknownWeightsError",
    "UnverifiedWeightsError",
    "WeightsEntry",
    "default_entry",
    "entry_for",
    "get_entry",
    "list_entries",
    "path_for",
    "pull",
    "resolve",
    "sha256_file",
    "store_root",
    "verify",
]
