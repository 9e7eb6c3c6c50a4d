# Standalone path (no ROS install): a local venv with the ROS 2 Jazzy wheels and CPU PyTorch.
# In a sourced ROS 2 workspace use colcon instead (see README); nothing here is needed there.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SOURCE ?=
MODEL  ?=
OUT    ?= out
PYTEST_ARGS ?=

.PHONY: demo test soak bench models clean

$(STAMP): setup.py setup.cfg package.xml scannernet_ros/_linestep.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (first time: about 3 minutes; ROS 2 wheels and CPU PyTorch from the package index, log in $(VENV)/pip.log)"
	$(PY) -m pip install --disable-pip-version-check -e '.[standalone,test,bench,export]' > $(VENV)/pip.log 2>&1 \
		|| { tail -30 $(VENV)/pip.log; exit 1; }
	$(PY) -c "import scannernet_ros.stepper as s; print('compiled line step:', 'built' if s._linestep else 'NOT built, ' + s.KERNEL_MISSING + ': the numpy step will run, 3-4x slower per line')"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/scannernet demo $(if $(SOURCE),--source $(SOURCE)) $(if $(MODEL),--model $(MODEL)) --out $(OUT)

test: $(STAMP)
	SCANNERNET_REQUIRE_KERNEL=1 $(PY) -m pytest -q -m "not soak" $(PYTEST_ARGS) test

soak: $(STAMP)
	$(PY) -m pytest -q -m soak test

bench: $(STAMP)
	$(VENV)/bin/scannernet bench --out $(OUT)/bench

models: $(STAMP)
	$(VENV)/bin/scannernet models

clean:
	rm -rf $(VENV) build *.egg-info $(OUT)
