"""The registry: every checkpoint dub-film knows, as a frozen :class:`WeightsEntry`.

In the style of torchvision's weights API every checkpoint is a frozen
:class:`WeightsEntry` -- name, family, url, sha256, size, license, file name and a
``meta`` mapping with everything needed to *use* the file (input normalisation,
anchors, channels, file format).  :data:`REGISTRY` holds them by name and
:data:`DEFAULTS` names the default entry of each family.  Where the files live and
how they are fetched and checked is :mod:`lipsync.store.fetch`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .errors import UnknownWeightsError


# --------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class WeightsEntry:
    """One published checkpoint.

    ``sha256`` and ``size`` describe the artefact at ``url`` as published (for an
    archive: the archive).  ``filename`` is the name of the file kept in the store
    (for an archive: the unpacked ``meta["archive_member"]``).  ``sha256`` is None
    only together with ``meta["sha256_unverified"] = True``.
    """

    name: str
    family: str
    url: str
    sha256: str | None
    size: int | None
    license: str
    filename: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))
        if self.sha256 is None and not self.meta.get("sha256_unverified"):
            raise ValueError(f"weights entry {self.name!r}: sha256 is None but meta['sha256_unverified'] is not set")
        if self.sha256 is not None and (len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256)):
            raise ValueError(f"weights entry {self.name!r}: sha256 {self.sha256!r} is not 64 lowercase hex digits")

    @property
    def archive(self) -> str | None:
        """``"zip"`` when the published artefact is an archive to unpack, else None."""
        return self.meta.get("archive")

    @property
    def verified(self) -> bool:
        """True when the entry carries a sha256 to check downloads against."""
        return self.sha256 is not None


#: Meta keys every entry of a family must carry (a test checks them).
REQUIRED_META: dict[str, tuple[str, ...]] = {
    "retinaface": (
        "format",
        "backbone",
        "return_layers",
        "in_channel",
        "out_channel",
        "num_anchors",
        "leaky",
        "color_order",
        "mean",
        "std",
        "min_sizes",
        "steps",
        "variance",
        "clip",
        "source",
    ),
    "light_asd": (
        "format",
        "state_dict_prefixes",
        "face_size",
        "face_color",
        "audio_features",
        "mfcc_dims",
        "audio_rate_hz",
        "video_fps",
        "trained_on",
        "source",
    ),
    "wav2lip": (
        "format",
        "face_size",
        "mel_step",
        "sample_rate",
        "fps_reference",
        "params",
        "source",
    ),
    "lipsync_expert": (
        "format",
        "face_size",
        "lower_row",
        "frames_per_window",
        "mel_step",
        "sample_rate",
        "fps",
        "params",
        "state_dict_keys",
        "source",
    ),
    "fid": (
        "format",
        "input_size",
        "color_order",
        "value_range",
        "feature_dim",
        "state_dict_keys",
        "source",
    ),
    "syncnet": (
        "format",
        "fps",
        "sample_rate",
        "mfcc_dims",
        "mfcc_steps_per_frame",
        "frames_per_window",
        "crop_size",
        "color_order",
        "params",
        "source",
    ),
}

_RETINAFACE_MNET_META: dict[str, Any] = {
    "format": "torch-legacy-pickle state_dict (keys may carry a 'module.' prefix)",
    "backbone": "mobilenet0.25",
    "return_layers": {"stage1": 1, "stage2": 2, "stage3": 3},
    "in_channel": 32,
    "out_channel": 64,
    "num_anchors": 2,
    # Face-Detector-1MB-with-landmark's models/net.py uses plain ReLU everywhere
    # (Pytorch_Retinaface's mnet uses LeakyReLU 0.1; these weights were not trained with it).
    "leaky": 0.0,
    "color_order": "BGR",
    "mean": (104.0, 117.0, 123.0),
    "std": (1.0, 1.0, 1.0),
    # This repo's cfg_mnet anchors, NOT Pytorch_Retinaface's [[16,32],[64,128],[256,512]].
    "min_sizes": ((10, 20), (32, 64), (128, 256)),
    "steps": (8, 16, 32),
    "variance": (0.1, 0.2),
    "clip": False,
    "parameters": 426_608,
    "state_dict_numel": 433_343,  # parameters + BatchNorm buffers
    "tensors": 300,
    "source": "github:biubug6/Face-Detector-1MB-with-landmark@2b075657aef954b9426f938ac7fce100b6910fe6 "
    "weights/mobilenet0.25_Final.pth, config data/config.py cfg_mnet",
}

_RETINAFACE_R50_META: dict[str, Any] = {
    "format": "zip archive holding one torch state_dict file (torch.utils.model_zoo.load_url layout)",
    "archive": "zip",
    "archive_member": "retinaface_resnet50_2020-07-20.pth",
    "sha256_unverified": True,
    # The URL's file name follows torch.hub's '<name>-<sha256 prefix>.<ext>' convention;
    # recorded for information only, never enforced (nobody published the full hash).
    "url_hash_prefix": "f168fae3c",
    "approx_size": "about 97 MB (reported by users; exact size unpublished)",
    "backbone": "resnet50",
    "return_layers": {"layer2": 1, "layer3": 2, "layer4": 3},
    "in_channel": 256,
    "out_channel": 256,
    "num_anchors": 2,
    "leaky": 0.0,
    # ternaus feeds RGB through albumentations A.Normalize() (ImageNet mean/std on 0..255).
    "color_order": "RGB",
    "mean": (123.675, 116.28, 103.53),
    "std": (58.395, 57.12, 57.375),
    "min_sizes": ((16, 32), (64, 128), (256, 512)),
    "steps": (8, 16, 32),
    "variance": (0.1, 0.2),
    "clip": False,
    "source": "github:ternaus/retinaface release 0.01 (retinaface/pre_trained_models.py 'resnet50_2020-07-20', "
    "retinaface/predict_single.py)",
}

_LIGHT_ASD_META: dict[str, Any] = {
    "format": "torch zip state_dict",
    "state_dict_prefixes": ("model.", "lossAV."),
    "params": "about 1.0 M",
    "face_size": (112, 112),
    "face_color": "gray",
    "audio_features": "mfcc",
    "mfcc_dims": 13,
    "audio_rate_hz": 100,
    "video_fps": 25,
}

_LIGHT_ASD_URL = "https://github.com/Junhua-Liao/Light-ASD/raw/ed38c232de5efe0261dbd68627c0ade7cdfe14eb/weight/"
_LIGHT_ASD_SOURCE = "github:Junhua-Liao/Light-ASD@ed38c232de5efe0261dbd68627c0ade7cdfe14eb weight/"

# Wav2Lip: the authors' README links (IIIT OneDrive/SharePoint, later Google Drive) need a browser
# and have been revoked and replaced more than once (Rudrabha/Wav2Lip#739, #752), so the URLs are the
# Hugging Face mirror most cited for direct download.  Nobody publishes a sha256 or exact size: the
# hash is recorded on first pull (allow_unverified=True).  The files are the authors' training
# checkpoints: {"state_dict" (keys "module."-prefixed or not), "optimizer", "global_step",
# "global_epoch"}, so about 3x the 145 MB of generator weights.
_WAV2LIP_HF = "https://huggingface.co/numz/wav2lip_studio/resolve/main/Wav2lip/"
_WAV2LIP_META: dict[str, Any] = {
    "format": "state_dict",
    "checkpoint_layout": "torch pickle {'state_dict', 'optimizer', 'global_step', 'global_epoch'}; "
    "keys may carry a 'module.' prefix (lipsync.models.wav2lip.load_wav2lip also reads TorchScript exports)",
    "sha256_unverified": True,
    "approx_size": "about 416 MB (reported by users; exact size unpublished)",
    "face_size": 96,
    "mask_row": 48,
    "color_order": "BGR",
    "value_range": (0.0, 1.0),
    "mel_step": 16,
    "n_mels": 80,
    "hop_length": 200,
    "sample_rate": 16000,
    "fps_reference": 25,
    "params": 36_298_035,
    "state_dict_keys": 352,
    "trained_on": "LRS2",
}
_WAV2LIP_SOURCE = (
    "github:Rudrabha/Wav2Lip README 'Getting the weights' (models/wav2lip.py, audio.py, hparams.py); "
    "mirrored at huggingface.co/numz/wav2lip_studio Wav2lip/"
)

# SyncNet: syncnet_python's download_model.sh fetches it over plain http from VGG Oxford; the same
# path is served over https.  No sha256 or size is published: recorded on first pull (allow_unverified=True).
_SYNCNET_META: dict[str, Any] = {
    "format": "torch state_dict (plain dict of tensors; keys netcnnaud.*, netfcaud.*, netcnnlip.*, netfclip.*; "
    "BatchNorm num_batches_tracked may be absent), loaded by lipsync.models.syncnet.load_syncnet",
    "sha256_unverified": True,
    "published_url": "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",
    "approx_size": "about 55 MB (13.64 M float32 numbers; exact size unpublished)",
    "license_note": "syncnet_python (code and the model it downloads) is published under the MIT licence",
    "fps": 25,
    "sample_rate": 16000,
    "mfcc_dims": 13,
    "mfcc_steps_per_frame": 4,
    "mfcc_window_steps": 20,
    "frames_per_window": 5,
    "crop_size": 224,
    "crop_scale": 0.4,
    "pad_value": 110,
    "color_order": "BGR",
    "value_range": (0.0, 255.0),
    "embedding_dim": 1024,
    "max_offset": 15,
    "params": 13_631_616,
    "state_dict_keys": 102,
    "metric": "LSE-D / LSE-C (lipsync.qc.lse), as syncnet_python SyncNetInstance.evaluate",
    "source": "github:joonson/syncnet_python download_model.sh (SyncNetModel.py, SyncNetInstance.py, run_pipeline.py)",
}

# The expert lip-sync discriminator of the Wav2Lip paper (the SyncNet_color of color_syncnet_train.py):
# the same Hugging Face mirror as the generators; the authors publish no hash.  Ours, trained with
# `dub train expert`, are files of the same layout (`--expert PATH` anywhere an entry is accepted).
_EXPERT_META: dict[str, Any] = {
    "format": "state_dict",
    "checkpoint_layout": "torch pickle {'state_dict', 'optimizer', 'global_step', 'global_epoch'}; keys may carry a "
    "'module.' prefix; loaded by lipsync.models.expert.load_expert",
    "sha256_unverified": True,
    "approx_size": "about 197 MB (weights and Adam state; exact size unpublished)",
    "face_size": 96,
    "lower_row": 48,
    "frames_per_window": 5,
    "color_order": "BGR",
    "value_range": (0.0, 1.0),
    "mel_step": 16,
    "n_mels": 80,
    "sample_rate": 16000,
    "fps": 25,
    "params": 16_435_072,
    "state_dict_keys": 217,
    "trained_on": "LRS2",
    "source": "github:Rudrabha/Wav2Lip README 'Getting the weights' (models/syncnet.py, color_syncnet_train.py); "
    "mirrored at huggingface.co/numz/wav2lip_studio Wav2lip/",
}

# FID's feature extractor: the TensorFlow Inception of 2015-12-05 as ported by pytorch-fid (the
# reference FID numbers are computed with it).  The file name carries torch.hub's sha256 prefix
# (6726825d), checked on pull; the full hash is recorded on first pull.
_FID_META: dict[str, Any] = {
    "format": "torch state_dict of torchvision's Inception3 layout with 1008 classes (pytorch-fid FIDInceptionA/C/E "
    "blocks), loaded by lipsync.train.fid.load_fid_inception",
    "sha256_unverified": True,
    "url_hash_prefix": "6726825d",
    "approx_size": "about 95 MB",
    "input_size": 299,
    "resize": "bilinear, align_corners=False, from the crop's own size",
    "color_order": "RGB",
    "value_range": (-1.0, 1.0),
    "feature_dim": 2048,
    "state_dict_keys": 472,  # 94 conv+BN blocks x 5 tensors + fc weight and bias (no num_batches_tracked)
    "source": "github:mseitzer/pytorch-fid release fid_weights (src/pytorch_fid/inception.py); weights ported from "
    "TensorFlow's inception-2015-12-05",
}

#: Every known checkpoint, by name.
REGISTRY: dict[str, WeightsEntry] = {
    e.name: e
    for e in (
        WeightsEntry(
            name="retinaface_mobilenet0.25",
            family="retinaface",
            url="https://github.com/biubug6/Face-Detector-1MB-with-landmark/raw/"
            "2b075657aef954b9426f938ac7fce100b6910fe6/weights/mobilenet0.25_Final.pth",
            sha256="ed6fa7d45a5179f03cb5ce82c73b0c6711372968e53782e88395acee88d319e1",
            size=1_789_735,
            license="MIT",
            filename="mobilenet0.25_Final.pth",
            meta=_RETINAFACE_MNET_META,
        ),
        WeightsEntry(
            name="retinaface_resnet50",
            family="retinaface",
            url="https://github.com/ternaus/retinaface/releases/download/0.01/"
            "retinaface_resnet50_2020-07-20-f168fae3c.zip",
            sha256=None,
            size=None,
            license="MIT",
            filename="retinaface_resnet50_2020-07-20.pth",
            meta=_RETINAFACE_R50_META,
        ),
        WeightsEntry(
            name="light_asd",
            family="light_asd",
            url=_LIGHT_ASD_URL + "pretrain_AVA_CVPR.model",
            sha256="d44bc3ea7baa8e0946fa3921311714a630ed8b90a1928fab0dbe30d918909317",
            size=4_175_289,
            license="MIT",
            filename="pretrain_AVA_CVPR.model",
            meta={
                **_LIGHT_ASD_META,
                "trained_on": "AVA-ActiveSpeaker",
                "source": _LIGHT_ASD_SOURCE + "pretrain_AVA_CVPR.model",
            },
        ),
        WeightsEntry(
            name="light_asd_talkset",
            family="light_asd",
            url=_LIGHT_ASD_URL + "finetuning_TalkSet.model",
            sha256="efc375833887eefa9d209dc92810e18519b04c3c73ea35a549f2a7f40b7d94d5",
            size=4_175_289,
            license="MIT",
            filename="finetuning_TalkSet.model",
            meta={
                **_LIGHT_ASD_META,
                "trained_on": "AVA-ActiveSpeaker, fine-tuned on TalkSet",
                "source": _LIGHT_ASD_SOURCE + "finetuning_TalkSet.model",
            },
        ),
        WeightsEntry(
            name="wav2lip",
            family="wav2lip",
            url=_WAV2LIP_HF + "wav2lip.pth",
            sha256=None,
            size=None,
            license="non-commercial research only (Wav2Lip, Rudrabha/Wav2Lip)",
            filename="wav2lip.pth",
            meta={
                **_WAV2LIP_META,
                "variant": "generator trained with the lip-sync expert only: most accurate sync, blurrier mouth",
                "source": _WAV2LIP_SOURCE + "wav2lip.pth",
                "mirrors": ("https://github.com/justinjohn0306/Wav2Lip/releases/download/models/wav2lip.pth",),
            },
        ),
        WeightsEntry(
            name="wav2lip_gan",
            family="wav2lip",
            url=_WAV2LIP_HF + "wav2lip_gan.pth",
            sha256=None,
            size=None,
            license="non-commercial research only (Wav2Lip, Rudrabha/Wav2Lip)",
            filename="wav2lip_gan.pth",
            meta={
                **_WAV2LIP_META,
                "variant": "generator trained with the lip-sync expert and the visual quality discriminator: "
                "sharper mouth, slightly weaker sync",
                "source": _WAV2LIP_SOURCE + "wav2lip_gan.pth",
                "mirrors": (
                    "https://github.com/justinjohn0306/Wav2Lip/releases/download/models/wav2lip_gan.pth",
                    "https://huggingface.co/camenduru/Wav2Lip/resolve/main/checkpoints/wav2lip_gan.pth",
                ),
            },
        ),
        WeightsEntry(
            name="lipsync_expert",
            family="lipsync_expert",
            url=_WAV2LIP_HF + "lipsync_expert.pth",
            sha256=None,
            size=None,
            license="non-commercial research only (Wav2Lip, Rudrabha/Wav2Lip)",
            filename="lipsync_expert.pth",
            meta=_EXPERT_META,
        ),
        WeightsEntry(
            name="fid_inception",
            family="fid",
            url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
            sha256=None,
            size=None,
            license="Apache-2.0 (pytorch-fid; TensorFlow Inception weights)",
            filename="pt_inception-2015-12-05-6726825d.pth",
            meta=_FID_META,
        ),
        WeightsEntry(
            name="syncnet_v2",
            family="syncnet",
            url="https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",
            sha256=None,
            size=None,
            license="MIT (joonson/syncnet_python)",
            filename="syncnet_v2.model",
            meta=_SYNCNET_META,
        ),
    )
}

#: The default entry of each family.
DEFAULTS: dict[str, str] = {
    "retinaface": "retinaface_mobilenet0.25",
    "light_asd": "light_asd",
    # GAN variant: film dubbing is judged on picture quality first, and its sync is close to wav2lip's.
    "wav2lip": "wav2lip_gan",
    "syncnet": "syncnet_v2",
    "lipsync_expert": "lipsync_expert",
    "fid": "fid_inception",
}


def list_entries(family: str | None = None) -> list[WeightsEntry]:
    """All registry entries (of ``family`` when given), sorted by name."""
    return sorted((e for e in REGISTRY.values() if family is None or e.family == family), key=lambda e: e.name)


def get_entry(name: str) -> WeightsEntry:
    """The entry called ``name``; :class:`UnknownWeightsError` names the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownWeightsError(
            f"unknown model weights {name!r}; known: {', '.join(sorted(REGISTRY))} (see `dub models list`)"
        ) from None


def default_entry(family: str) -> WeightsEntry:
    """The default entry of ``family``."""
    try:
        return get_entry(DEFAULTS[family])
    except KeyError:
        raise UnknownWeightsError(f"no default weights for family {family!r}; families: {', '.join(sorted(DEFAULTS))}") from None


def entry_for(name_or_path: str | os.PathLike[str], family: str) -> WeightsEntry:
    """The registry entry describing ``name_or_path``: by name, else by file name, else ``family``'s default."""
    text = os.fspath(name_or_path)
    if text in REGISTRY:
        return REGISTRY[text]
    base = Path(text).name
    for e in list_entries(family):
        if e.filename == base:
            return e
    return default_entry(family)
