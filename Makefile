# The two commands of the README.  Both set the machine up first (idempotent).
.PHONY: setup demo test bench

setup:
	@bash scripts/setup.sh

# Face detector weights: from ../shared/data when present, else downloaded (checksum verified).
WEIGHTS_SRC := ../shared/data/weights/retinaface-mobilenet0.25/mobilenet0.25_Final.pth

demo: setup
	@if [ -f $(WEIGHTS_SRC) ]; then .venv/bin/dub models pull retinaface_mobilenet0.25 --source $(WEIGHTS_SRC); \
	 else .venv/bin/dub models pull retinaface_mobilenet0.25; fi
	.venv/bin/dub demo --out demo-output

test: setup
	.venv/bin/python -m pytest -q tests

bench: setup
	.venv/bin/python bench/bench_foundation.py
