# The two commands of the README.  Both set the machine up first (idempotent).
.PHONY: setup demo test bench

setup:
	@bash scripts/setup.sh

# Face detector and active-speaker weights: from ../shared/data when present, else downloaded (checksum verified).
WEIGHTS_SRC := ../shared/data/weights/retinaface-mobilenet0.25/mobilenet0.25_Final.pth
ASD_SRC := ../shared/data/weights/light-asd/pretrain_AVA_CVPR.model

# The demo: two speakers taking turns (../shared/data), dubbed; without Wav2Lip weights it renders the casting preview.
demo: setup
	@if [ -f $(WEIGHTS_SRC) ]; then .venv/bin/dub models pull retinaface_mobilenet0.25 --source $(WEIGHTS_SRC); \
	 else .venv/bin/dub models pull retinaface_mobilenet0.25; fi
	@if [ -f $(ASD_SRC) ]; then .venv/bin/dub models pull light_asd --source $(ASD_SRC); \
	 else .venv/bin/dub models pull light_asd; fi
	.venv/bin/dub demo --out demo-output

test: setup
	.venv/bin/python -m pytest -q tests

bench: setup
	.venv/bin/python bench/bench_foundation.py
