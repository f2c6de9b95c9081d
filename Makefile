# Two commands do everything on a fresh machine:  `make run`  and  `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv run demo lint test bench screenshots constraints clean

$(BIN)/btunet: setup.cfg pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	# every other release as recorded in constraints.txt, so a fresh machine gets what was tested
	$(BIN)/pip install -q -e ".[testing]" -c constraints.txt
	# releases that declare each other incompatible stop here, before any test
	$(BIN)/pip check
	touch $(BIN)/btunet

venv: $(BIN)/btunet

## napari with the three widgets and the sample; the headless demo where there is no display
run: venv
	$(BIN)/python -m napari_btunet.launch

## the painting loop on the shipped BBBC007 sample: strokes -> preview -> one correction round -> predict
demo: venv
	$(BIN)/python examples/demo.py

## ruff with the rules in pyproject.toml (seconds)
lint: venv
	$(BIN)/ruff check .

## installed releases fit together, lint, then the suite (its first tests import every optional module)
test: venv
	$(BIN)/pip check
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python benchmarks/interactive.py
	$(BIN)/python benchmarks/first_preview.py
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/fused.py
	$(BIN)/python benchmarks/quality.py
	$(BIN)/python benchmarks/objects.py --seconds 150
	$(BIN)/python benchmarks/export_speed.py

## record the releases of the current environment in constraints.txt (after an upgrade that passed make test)
constraints: venv
	{ sed -n '1,2p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v -i '^torch=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info demo_output
