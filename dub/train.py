"""`dub train dataset | expert | wav2lip`: the training recipe, one subcommand per step."""

from __future__ import annotations

import typer

train_app = typer.Typer(help="Train the studio's own lip-sync expert and Wav2Lip generator.", no_args_is_help=True)

# Each step registers its command on ``train_app`` (one module per step).
from . import train_dataset, train_expert, train_wav2lip  # noqa: E402,F401
