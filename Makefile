# Set-up, the main job and the tests. `make demo` and `make test` are all a fresh machine needs.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-deps fonts demo test bench lexicon

setup: $(VENV)/.installed fonts  ## Python packages into .venv, fonts into the cache ($SYNTH_CACHE)

# Registry clients the fetchers shell out to: npm (npm pack) and apt-get/dpkg-deb (Debian packages);
# and venv support, which Debian's python3 leaves to the python3-venv package.
system-deps:
	@command -v npm >/dev/null && command -v dpkg-deb >/dev/null && $(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm python3-venv; }
	@[ -n "$$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v -e lock -e partial)" ] || $(SUDO) apt-get update -qq

$(VENV)/.installed: pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-binary elasticdeform -e '.[test,lexicon,train]'
	touch $@

fonts: $(VENV)/.installed | system-deps  ## install every catalogue style (first run ~3 min, then seconds)
	$(BIN)/synth fonts fetch

demo: setup  ## the main job on the embedded defaults: check the assets, render a small corpus, look at it
	$(BIN)/synth lexicon stats
	$(BIN)/synth fonts check
	$(BIN)/synth render --lang all --fonts train --per-id 4 --ids 0:60 --out out/demo
	$(BIN)/synth verify out/demo
	$(BIN)/synth preview out/demo --out out/demo-sheet.png --force
	@echo "demo: corpus in out/demo (data/*.parquet, manifest.json, README.md), contact sheet out/demo-sheet.png"

test: setup  ## the test suite (CI runs exactly this)
	$(BIN)/python -m pytest

bench: setup  ## speed: our renderer beside TRDG and SynthTIGER (own venvs), and the full pretrain corpus
	$(BIN)/python tests/benchmarks/bench.py --seconds 20 --repeats 2 --corpus --json out/bench.json

lexicon: $(VENV)/.installed | system-deps  ## rebuild lexicon/lexicon.tsv from its sources (see docs/lexicon.md)
	$(BIN)/synth lexicon build --force
