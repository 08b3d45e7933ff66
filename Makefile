# genda: two commands from a fresh clone.
#   make demo   create .venv, install, run the main job on the embedded default
#   make test   create .venv, install with test extras, lint, run the tests

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch first, pinned: 2.13.0 is the CPU wheel on machines without a GPU; a
# looser pin would pull a multi-GB CUDA build (README, "GPU").
TORCH  := torch==2.13.0
# azula (diffusion schedules, samplers, guidance) declares torchvision and gdown
# as requirements, which would replace torch by a CUDA build; the modules genda
# uses need only torch and einops, so it is installed without its requirements.
AZULA  := azula==0.11.1

.PHONY: demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps $(AZULA)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/genda demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

# the tests without those marked slow (Ray clusters, Prefect servers, the benchmark studies)
test-fast: $(STAMP) lint
	$(BIN)/python -m pytest -q -m "not slow"

# every benchmark, then benchmarks/results/<machine>.json and .md (hours on a CPU)
bench: $(STAMP)
	$(BIN)/python benchmarks/simulator.py
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/sampling.py
	$(BIN)/python benchmarks/posterior_gaussian.py
	$(BIN)/python benchmarks/osse.py
	$(BIN)/python benchmarks/distributed.py
	$(BIN)/python benchmarks/strategies.py
	$(BIN)/python benchmarks/strategies_pareto.py
	$(BIN)/python benchmarks/plan_validation.py
	$(BIN)/python benchmarks/autoregressive_estimate.py
	$(BIN)/python benchmarks/cycled_osse.py --tune
	$(BIN)/python benchmarks/cycled_osse.py --days 6
	$(BIN)/genda train --data outputs/osse/train.zarr --coordinates whitened --states 4 \
		--out outputs/trajectory-k4 --steps 3000 --batch-size 16 --lr 3e-4 --warmup-steps 200 \
		--no-progress --overwrite
	$(BIN)/python benchmarks/trajectory_osse.py --prior outputs/trajectory-k4 --days 3
	$(BIN)/python benchmarks/filtering_bound.py --work outputs/cycled_osse
	$(BIN)/python benchmarks/filter_start.py --prior outputs/trajectory-k4
	$(BIN)/python benchmarks/filter_start.py --prior outputs/trajectory-k4 --variants kept 1000@0.9 2500@0.9 \
		--processes 3 --name filter_start_rtps
	$(BIN)/python benchmarks/old_observation.py --prior outputs/trajectory-k4 --work outputs/cycled_osse
	$(BIN)/python benchmarks/long_window.py --prior outputs/trajectory-k4 --work outputs/cycled_osse --hours 7
	$(BIN)/python benchmarks/member_spectra.py --work outputs/cycled_osse
	$(BIN)/python benchmarks/observation_space.py --prior outputs/trajectory-k4 default --work outputs/cycled_osse
	$(BIN)/python benchmarks/cost.py
	$(BIN)/python benchmarks/summary.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
