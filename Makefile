# Tidal's developer entry points. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SRC    := operator/tidal tests bench

##@ General

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required (python3.11 or python3 on PATH)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

.PHONY: venv
venv: $(STAMP) ## Create the virtualenv with pinned dependencies

##@ Development

.PHONY: crds
crds: $(STAMP) ## Regenerate crds/ from the pydantic API models
	$(VENV)/bin/tidal crds --out crds

.PHONY: verify-crds
verify-crds: $(STAMP) ## Fail if crds/ differs from what the models generate
	$(VENV)/bin/tidal crds --out crds --check

.PHONY: fmt
fmt: $(STAMP) ## Format and autofix
	$(VENV)/bin/ruff format $(SRC)
	$(VENV)/bin/ruff check --fix $(SRC)

.PHONY: lint
lint: $(STAMP) ## ruff, mypy --strict, import-linter layering contracts
	$(VENV)/bin/ruff check $(SRC)
	$(VENV)/bin/ruff format --check $(SRC)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

.PHONY: unit
unit: $(STAMP) ## Unit tests (no cluster or GPU; the GPU bundle's test fetches its pinned wheels from PyPI)
	$(VENV)/bin/pytest tests/unit -q

.PHONY: qdrant
qdrant: $(STAMP) ## Check the Qdrant server binary the e2e tests run ($$TIDAL_QDRANT_BIN, else ../shared/bin/qdrant)
	@$(PY) -m tests.e2e.qdrant

.PHONY: test-qdrant
test-qdrant: qdrant ## The Qdrant driver against a real Qdrant 1.18 started on loopback (part of make e2e; no cluster needed)
	$(VENV)/bin/pytest tests/e2e/test_qdrant_engine.py -q -p no:randomly

# The GPU suite travels as one folder: a GPU machine may have no network and none of the
# project's packages, and carries at most 64 MiB (docs/agent.md, "Running the GPU tests").
GPU_BUNDLE         ?= build/gpu-bundle
GPU_WHEELS         ?= build/gpu-wheels
GPU_BUNDLE_PYTHONS ?= 3.11 3.12 3.13
GPU_REPORT         ?= build/gpu-report.json

.PHONY: gpu-bundle
gpu-bundle: $(STAMP) ## build/gpu-bundle: tests/gpu, Tidal's NVML path and pinned deps alone (~24 MiB), to copy to a GPU machine
	$(PY) -m tests.gpu.bundle --out $(GPU_BUNDLE) --wheels $(GPU_WHEELS) $(addprefix --python ,$(GPU_BUNDLE_PYTHONS))

.PHONY: test-gpu
test-gpu: gpu-bundle ## The GPU suite from the bundle on this machine's GPUs (skipped where NVML finds none); report in build/gpu-report.json
	$(PYTHON) $(GPU_BUNDLE)/run.py --report $(GPU_REPORT)

.PHONY: controlplane
controlplane: $(STAMP) ## Build and cache etcd, kube-*, kubectl, KWOK, Karpenter and versitygw (S3); fetch the PodMonitor CRD (first time: minutes)
	$(VENV)/bin/tidal dev build --karpenter --monitoring-crds --versitygw

.PHONY: prometheus
prometheus: ## Install Debian's prometheus (used by the SLO e2e tests) when /usr/bin/prometheus is missing
	@if [ ! -x /usr/bin/prometheus ]; then \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$SUDO apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends prometheus; \
	fi

.PHONY: e2e
e2e: controlplane prometheus qdrant ## E2E tests on the embedded local control plane (or E2E_KUBECONFIG)
	$(VENV)/bin/pytest tests/e2e -q --timeout=900 -p no:randomly

# make e2e already runs tests/e2e/test_chaos.py (and so does make test); this runs it alone.
.PHONY: test-chaos
test-chaos: controlplane ## Fault tests only: kill -9 under churn, etcd/API server restarts, 409s, peering
	$(VENV)/bin/pytest tests/e2e/test_chaos.py -q --timeout=900 -p no:randomly

.PHONY: test
test: verify-crds lint unit e2e ## Everything CI runs: lint, unit and e2e tests (test-chaos included)
	@echo "make test: all green"

##@ Run

# FLEET=elastic: CPU nodes only, real Karpenter (KWOK provider) launches the GPU nodes.
FLEET ?=

.PHONY: demo
demo: controlplane ## Local cluster + CRDs + operator + samples; leaves them running (FLEET=elastic: Karpenter)
	$(if $(FLEET),TIDAL_FLEET=$(FLEET) )$(PY) -m tidal.devcluster.demo

.PHONY: demo-down
demo-down: $(STAMP) ## Stop the demo's operator and local cluster
	$(PY) -m tidal.devcluster.demo --down

.PHONY: dev-up
dev-up: controlplane ## Start only the local cluster (KUBECONFIG printed; FLEET=elastic: Karpenter)
	$(VENV)/bin/tidal dev up$(if $(FLEET), --fleet $(FLEET))

.PHONY: dev-down
dev-down: $(STAMP) ## Stop the local cluster
	$(VENV)/bin/tidal dev down

.PHONY: e2e-kind
e2e-kind: $(STAMP) ## E2E suite on a kind cluster (needs Docker and kind; not available on CI)
	kind create cluster --name tidal-e2e --config kind/kind-config.yaml --kubeconfig .tidal/kind.kubeconfig
	$(PY) -m tests.e2e.kind_fleet .tidal/kind.kubeconfig
	E2E_KUBECONFIG=.tidal/kind.kubeconfig $(VENV)/bin/pytest tests/e2e -q --timeout=900 ; rc=$$?; \
	  kind delete cluster --name tidal-e2e; exit $$rc

##@ Benchmarks

.PHONY: bench
bench: ## Every benchmark below; each rewrites its own section of docs/benchmarks.md
	@echo "make bench: docs/benchmarks.md updated"

.PHONY: bench-spot-loss
bench-spot-loss: controlplane ## Spot loss -> all replicas Ready on reserved, p50/p95 over 20 trials on a fresh local cluster (~4 min)
	$(PY) -m bench.spot_loss $(BENCH_SPOT_LOSS_ARGS)

bench: bench-spot-loss

.PHONY: bench-elastic
bench-elastic: controlplane ## Apply -> Ready from zero GPU nodes with Karpenter, N endpoints vs N plain Deployments (N=1, 50; 3 rounds) on a fresh elastic cluster; writes docs/benchmarks.md (~7 min)
	$(PY) -m bench.elastic_ready $(BENCH_ELASTIC_ARGS)

bench: bench-elastic

.PHONY: bench-spot-unavailable
bench-spot-unavailable: controlplane ## Spot unavailable in a region -> all replicas Ready on Karpenter on-demand, p50/p95 after Karpenter reports the failure, 20 trials on a fresh elastic cluster; writes docs/benchmarks.md (~9 min)
	$(PY) -m bench.spot_unavailable $(BENCH_SPOT_UNAVAILABLE_ARGS)

bench: bench-spot-unavailable

.PHONY: bench-crosscheck
bench-crosscheck: controlplane ## Live cross-check of the economics simulator: one Auto endpoint under a steady simulated load on the elastic fleet through a spot crunch and back, live mix and node $/h (Karpenter's choices) vs the simulator's prediction per phase; writes docs/benchmarks.md (~10 min)
	$(PY) -m bench.crosscheck $(BENCH_CROSSCHECK_ARGS)

bench: bench-crosscheck

.PHONY: bench-coldstart
bench-coldstart: controlplane ## Wake from zero through the gateway, replica downloading vs reading the shared model cache (simulated Llama 3.1 8B weights, public download/read rates), 3 wakes each on a fresh local cluster; writes docs/benchmarks.md (~12 min)
	$(PY) -m bench.coldstart $(BENCH_COLDSTART_ARGS)

bench: bench-coldstart

.PHONY: bench-interruption
bench-interruption: controlplane ## Spot interruption with 120 s and 30 s notice (60 s replica load), 20 trials each, 10 endpoints at a time on a fresh elastic cluster: seconds below desired Ready, requests failed through the gateway; writes docs/benchmarks.md (~13 min)
	$(PY) -m bench.interruption $(BENCH_INTERRUPTION_ARGS)

bench: bench-interruption

.PHONY: bench-gateway
bench-gateway: $(STAMP) ## Gateway overhead vs a direct call, p50/p99 at 1/64/512 streams; writes docs/benchmarks.md (~2 min)
	$(PY) -m bench.gateway_overhead $(BENCH_GATEWAY_ARGS)

bench: bench-gateway

.PHONY: bench-vector-sizing
bench-vector-sizing: $(STAMP) ## Sizing estimate vs measured pgvector size, halfvec vs vector; writes docs/benchmarks.md (~5 min)
	$(PY) -m bench.vector_sizing

bench: bench-vector-sizing

.PHONY: bench-qdrant-sizing
bench-qdrant-sizing: $(STAMP) ## Sizing estimate vs a real Qdrant 1.18's resident memory and storage folder, None/Scalar/Binary, fitted on 30k x 384 and 15k x 1536, 100k x 768 held out; writes docs/benchmarks.md (about 1.5-2.5 h on 2 shared cores: a 100k x 768 None HNSW build took 37 min on a busy machine, Scalar 5 min and Binary 1 min on a quieter one; `--from-json bench/results/qdrant_sizing*.json` re-reports the saved runs)
	$(PY) -m bench.qdrant_sizing $(BENCH_QDRANT_SIZING_ARGS)

bench: bench-qdrant-sizing

.PHONY: bench-vector-hibernate
bench-vector-hibernate: $(STAMP) ## Qdrant 100k x 768 hibernated to S3 (versitygw) and woken through the operator's cold-tier functions: first query p50/p95 over 7 trials (`--trials 15 --storage DIR` as in docs/benchmarks.md), recall before/after on the same sample; writes docs/benchmarks.md
	$(PY) -m bench.vector_hibernate $(BENCH_VECTOR_HIBERNATE_ARGS)

bench: bench-vector-hibernate

.PHONY: bench-vector-quality
bench-vector-quality: $(STAMP) ## recall@10 and p95 per quantization (Qdrant None/Scalar/Binary, rescore on/off; pgvector vector/halfvec/bit) by the operator's SLO probe, 20k x 768; writes docs/benchmarks.md and the table in docs/vectorcollection.md (~9 min: 526 s on 2 shared cores)
	$(PY) -m bench.vector_quality $(BENCH_VECTOR_QUALITY_ARGS)

bench: bench-vector-quality

.PHONY: venv-bench
venv-bench: $(VENV)/.installed-bench ## The virtualenv plus the bench extra (matplotlib, for the economics picture)

$(VENV)/.installed-bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $@

# 10 seeds x 2 days with Tidal's budget curve (tidal@B: three reconciling rows per market), about
# 50 minutes on 2 cores; the operator's reconcile is three quarters of a reconciling run
# (bench/README.md, "Where the time goes"). The posed size: bench-economics-posed below.
BENCH_ECONOMICS_ARGS ?= --seeds 10 --train-seeds 5 --days 2 --spot-preferred 0 --decide-every 900 \
	--tidal-budgets 0.03 0.1 --watched-days 30 \
	--pessimistic-strategies tidal tidal@0.03 tidal@0.1 all-on-demand all-spot spothedge+0 \
	price-first+0 spotpreferred+0
.PHONY: bench-economics
bench-economics: $(VENV)/.installed-bench ## Placement economics: Tidal vs on-demand, spot, price-first, SpotPreferred, SpotHedge, a 1-year commitment over seeded weeks (train/held-out seeds, two spot markets); SCR with 95% CIs, frontier PNG; writes docs/benchmarks.md (10 seeds x 2 days with Tidal's budget curve, ~50 min on 2 cores; the posed 50 x 7: bench-economics-posed)
	$(PY) -m bench.economics $(BENCH_ECONOMICS_ARGS)

bench: bench-economics

# The size the benchmark is posed at, 50 seeds x 7 days, with the rows the targets read (no
# budget curve, SpotPreferred only realistic): about two hours on two idle cores; then the
# headroom baselines and the commitment in the pessimistic market too (about 25 min on one
# core), so the frontier can be read among the strategies within the interruption target;
# then SpotPreferred's headroom sweep (+25 %, +50 %: the same reconcile, about an hour).
# Resumable: stopped, the same target goes on from the runs saved in build/ (`--resume`); then
# the three files are reported into docs/benchmarks.md as one run.
ECONOMICS_POSED := --seeds 50 --train-seeds 25 --days 7 --decide-every 900 --watched-days 30
ECONOMICS_POSED_RUNS := build/economics-runs-50x7.json
ECONOMICS_POSED_MORE := build/economics-runs-50x7-pessimistic-baselines.json
ECONOMICS_POSED_SWEEP := build/economics-runs-50x7-spotpreferred-sweep.json
.PHONY: bench-economics-posed
bench-economics-posed: $(VENV)/.installed-bench ## Placement economics at the posed size, 50 seeds x 7 days (~3.5 h on 2 idle cores; resumable: run it again to go on); writes docs/benchmarks.md
	$(PY) -m bench.economics $(ECONOMICS_POSED) --spot-preferred 0 \
		--pessimistic-strategies tidal all-on-demand all-spot spothedge+0 price-first+0 \
		--out - --png - --results $(ECONOMICS_POSED_RUNS) --resume
	$(PY) -m bench.economics $(ECONOMICS_POSED) --spot-preferred --markets pessimistic \
		--pessimistic-strategies commitment-1y price-first+25 price-first+50 price-first+100 \
		spothedge+25 spothedge+50 --workers 1 --out - --png - --results $(ECONOMICS_POSED_MORE) --resume
	$(PY) -m bench.economics $(ECONOMICS_POSED) --spot-preferred 25 50 --markets realistic \
		--only spotpreferred+25 spotpreferred+50 --out - --png - --results $(ECONOMICS_POSED_SWEEP) --resume
	$(PY) -m bench.economics $(ECONOMICS_POSED) \
		--from-results $(ECONOMICS_POSED_RUNS) $(ECONOMICS_POSED_MORE) $(ECONOMICS_POSED_SWEEP)

.PHONY: bench-scale
bench-scale: controlplane ## N endpoints vs N plain Deployments -> Ready on a 500-node simulated fleet, then 200 VectorCollections on a real pgvector; operator CPU/RSS; writes docs/benchmarks.md
	$(PY) -m bench.scale $(BENCH_SCALE_ARGS)

bench: bench-scale
