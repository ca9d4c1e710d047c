# rmsim: every target sets up .venv itself, so a fresh clone needs only python3 (>= 3.11).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# single-threaded BLAS: multi-threaded small linear algebra is several times slower on 2 cores
export OPENBLAS_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: help install demo test test-sb3 faults lint format bench bench-scaling figures sanity cluster-test mutation clean

help:
	@echo "make demo    set up .venv, run the default experiment, print its summary"
	@echo "make test    set up .venv, lint, run the test suite"
	@echo "make test-sb3 install the sb3 extra (stable-baselines3, torch 2.13.0 CPU) into .venv, run its tests (~1 min)"
	@echo "make bench   run the speed benchmarks -> results/bench.json"
	@echo "make bench-scaling  time and memory vs world size, fitted exponents -> results/bench.json, results/figures/scaling.png (~20 min idle, 40 under load)"
	@echo "make lint    ruff check + format check"
	@echo "make figures every named experiment at paper scale -> results/figures/<name>.png and .pdf"
	@echo "make sanity  every named experiment at sanity scale, with its claim checked (what CI runs)"
	@echo "make faults  every named experiment's sanity sweep under a simulator fault: each claim must fail (CI)"
	@echo "make cluster-test  a one-node SLURM cluster: sweep, scancel, resume, collect (root + apt-get; ~1.5 min)"
	@echo "make mutation mutation testing of the core (mutmut) -> results/mutation.json; JOBS=2, MUTATE=<modules>, SAMPLE=<fraction> (hours; not in CI)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.run

lint: $(STAMP)
	$(PY) -m ruff check sim experiments hydra_plugins benchmarks tests tools examples
	$(PY) -m ruff format --check sim experiments hydra_plugins benchmarks tests tools examples

format: $(STAMP)
	$(PY) -m ruff format sim experiments hydra_plugins benchmarks tests tools examples
	$(PY) -m ruff check --fix sim experiments hydra_plugins benchmarks tests tools examples

# env -u PYTHONDONTWRITEBYTECODE: the suite starts ~90 Python processes (command-line runs, launcher workers); with
# bytecode written once they do not each recompile rmsim's sources (0.1 s of CPU a process where the variable is set)
test: lint
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -n 2 --dist loadgroup --maxschedchunk=2 -q --durations=10 --ignore=tests/test_sb3.py \
		--ignore=sim/integrations/sb3.py  # test-sb3 runs those; the module has no doctest, and collecting it imports torch (3 s)

# the stable-baselines3 integration: the sb3 extra into .venv (again only when pyproject.toml changes), its tests
test-sb3: $(STAMP)
	@test $(VENV)/.installed-sb3 -nt pyproject.toml || \
		{ $(PY) -m pip install --quiet -e ".[sb3]" && touch $(VENV)/.installed-sb3; }
	$(PY) -m pytest -q tests/test_sb3.py

faults: $(STAMP)
	RMSIM_FAULTS=1 $(PY) -m pytest -n 2 -q -m fault

bench: $(STAMP)
	$(PY) -m benchmarks.run

# the long ladders (up to S*A = 4.9e7 and V = 50,000): merged under "scaling" in results/bench.json
bench-scaling: $(STAMP)
	$(PY) -m benchmarks.scaling

figures: $(STAMP)
	$(PY) -m experiments.figures all --scale paper --check

sanity: $(STAMP)
	$(PY) -m experiments.figures all --scale sanity --check

# mutation testing of the core (tools/mutation.py): each module of its table against the test files that cover it,
# equivalent mutants listed in tests/mutation_equivalents.txt -> results/mutation.json. Not in CI: about 0.2-0.4
# mutants/s per worker here, i.e. hours for the whole core. MUTATE="sim/metrics.py ..." runs some modules (merged
# into the json), SAMPLE=0.5 a seeded half of each; `tools/mutation.py --retest <modules>` re-checks only survivors.
JOBS ?= 2
MUTATE ?=
SAMPLE ?= 1
mutation: $(STAMP)
	@test $(VENV)/.installed-mutation -nt pyproject.toml || \
		{ $(PY) -m pip install --quiet -e ".[mutation]" && touch $(VENV)/.installed-mutation; }
	$(PY) tools/mutation.py -j $(JOBS) --sample $(SAMPLE) $(MUTATE)

# needs root and apt-get (skips without them); stops its daemons at the end unless RMSIM_KEEP_CLUSTER=1
cluster-test: $(STAMP)
	PY=$(PY) bash .ci/cluster/test.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
