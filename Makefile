# metalearn-edu: every target installs what it needs into .venv first (Python 3.10+ and pip only).
# torch is pinned by constraints.txt in every install, so no surprise CUDA download.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet -c constraints.txt
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(wildcard notebooks/*.ipynb solutions/*.ipynb)

.PHONY: help setup lab demo test notebooks exercises reproduce reproduce-navigation reproduce-locomotion bench grade-class clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PIP) -e ".[dev]"
	touch $@

setup: $(STAMP)  ## create .venv and install the course (library, JupyterLab, test tools)

lab: $(STAMP)  ## open the course in JupyterLab at notebooks/00_start_here.ipynb
	$(VENV)/bin/jupyter lab notebooks/00_start_here.ipynb

demo: $(STAMP)  ## headless: meta-train sinusoid MAML for 3000 iterations and write runs/demo/fit.png
	$(VENV)/bin/metalearn-edu train sinusoid --iterations 3000 --out runs/demo --no-resume
	$(VENV)/bin/metalearn-edu evaluate sinusoid --checkpoint runs/demo/checkpoint.pt --tasks 200
	@echo "figures: runs/demo/fit.png runs/demo/loss.png"

test: $(STAMP)  ## the whole test suite: library tests, exercise/solution checks, notebooks under nbval (fast mode)
	$(VENV)/bin/metalearn-edu course check
	$(PY) -m pytest tests
ifneq ($(NOTEBOOKS),)
	METALEARN_EDU_FAST=1 $(PY) -m pytest --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider $(NOTEBOOKS)
endif

notebooks: $(STAMP)  ## re-execute notebooks/ and solutions/ in full mode (regenerates committed outputs)
	$(VENV)/bin/metalearn-edu course run

exercises: $(STAMP)  ## regenerate exercises/ from solutions/
	$(VENV)/bin/metalearn-edu course build

reproduce: $(STAMP)  ## Finn et al. Table 2 for MAML, pretrain, FOMAML, Reptile (about 20 min) + speed benchmark
	METALEARN_EDU_CLI=$(VENV)/bin/metalearn-edu scripts/reproduce_sinusoid.sh runs/table2

reproduce-navigation: $(STAMP)  ## 2D navigation: PPO-MAML (5 seeds), MAML-VPG, MAML-TRPO and PPO-inner (3 seeds each), pretrained, then the paper-protocol table (about 3.5 h)
	METALEARN_EDU_CLI=$(VENV)/bin/metalearn-edu scripts/reproduce_navigation.sh runs/navigation

reproduce-locomotion: $(STAMP)  ## the shipped HalfCheetah PPO-MAML and pretrained checkpoints, their paper-protocol table and videos (CPU hours)
	METALEARN_EDU_CLI=$(VENV)/bin/metalearn-edu PATH=$(VENV)/bin:$$PATH scripts/reproduce_locomotion.sh runs/locomotion

bench: $(STAMP)  ## meta-iterations per second: per-task loop vs vmap, MAML vs FOMAML
	$(VENV)/bin/metalearn-edu bench maml

grade-class: $(STAMP)  ## grade a simulated class of 20 submissions (good, wrong, hostile) of exercise 01
	$(PY) scripts/grade_class.py

clean:  ## remove the virtual environment and run outputs
	rm -rf $(VENV) runs
