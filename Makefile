# Everything a newcomer needs: `make test` and `make demo`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The machines this project is developed on carry these exact wheels on local disk; users with other
# set-ups may override, e.g. `make test TORCH_PINS="torch torchvision"`.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: test demo install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[test,deploy]"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(VENV)/.installed
	$(PY) -m add3d demo --out runs/demo $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) build *.egg-info
