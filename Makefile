# The two commands of the README.  Both set the machine up first (idempotent).
.PHONY: setup demo test bench

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/dub demo --out demo-output

test: setup
	.venv/bin/python -m pytest -q tests

bench: setup
	.venv/bin/python bench/bench_foundation.py
