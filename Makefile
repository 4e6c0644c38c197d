# Two commands matter: `make test` and `make demo`. Both set up the environment on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WHEELS := .wheels
D2_WHEEL := $(WHEELS)/sal_detectron2-0.7.2-py3-none-any.whl
STAMP := $(VENV)/.installed

.PHONY: setup test demo clean detectron2-wheel

setup: $(STAMP)

# For a pip install of [detection] (or [search], [all]) outside this Makefile on Python 3.11+:
# pip install --find-links .wheels 'nasnet-backbones[detection]'
detectron2-wheel: $(D2_WHEEL)

# PyPI ships sal-detectron2 only as a cp310-none-any wheel; the code is pure Python, so we
# fetch it for 3.10 and rename it to a py3 wheel that any CPython 3 install accepts.
$(D2_WHEEL):
	mkdir -p $(WHEELS)
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version 3.10 \
		-d $(WHEELS) sal-detectron2==0.7.2
	mv $(WHEELS)/sal_detectron2-0.7.2-cp310-none-any.whl $@

# One resolve for everything, every extra and the test tools (sal-detectron2 pins numpy<2; a later
# separate install breaks it). Re-runs only when pyproject.toml changes.
$(STAMP): pyproject.toml $(D2_WHEEL)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	rm -rf *.egg-info  # stale metadata here would shadow the install's (its nasnet.commands entry points)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install --find-links $(WHEELS) -e '.[all,test]'
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The whole product on generated data, offline: search, backbones, detection, export, REPORT.md.
demo: $(STAMP)
	$(BIN)/nasnet demo --output-dir demo_out

clean:
	rm -rf $(VENV) $(WHEELS) build *.egg-info
