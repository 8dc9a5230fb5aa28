# The two commands of a fresh machine: `make demo` and `make test`. Both set up what they need.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := slapd ldap-utils chromium nftables postgresql redis-server rclone
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)
export DEBIAN_FRONTEND := noninteractive
# the real tier: the Kubernetes-facing files (the rest needs the emulator's fault injection or
# runs no Kubernetes at all)
REAL_TIER_TESTS ?= tests/realtier \
	tests/integration/test_apiserver_semantics.py tests/integration/test_apiserver_podsecurity.py \
	tests/integration/test_apiserver_parity.py tests/integration/test_localcluster_kubespawner.py \
	tests/integration/test_spawner_bundle.py tests/integration/test_spawner_homes.py \
	tests/integration/test_spawner_hub.py tests/integration/test_spawner_profiles.py \
	tests/integration/test_launcher_proxy.py tests/integration/test_launcher_status.py \
	tests/integration/test_launcher_ui.py tests/integration/test_launcher_api.py \
	tests/integration/test_launcher_lifecycle.py tests/integration/test_culler_side_services.py \
	tests/security/test_launcher_pages.py tests/security/test_launcher_records.py \
	tests/integration/test_launcher_jobs.py tests/integration/test_launcher_jobs_hub.py \
	tests/integration/test_launcher_public_urls.py tests/security/test_launcher_forwardauth.py \
	tests/security/test_launcher_headers.py tests/security/test_launcher_input.py \
	tests/security/test_launcher_proxy_targets.py \
	tests/security/test_launcher_record_properties.py tests/security/test_names_injective.py \
	tests/integration/test_localcluster_dns.py tests/integration/test_apiserver_job_ttl.py \
	tests/integration/test_launcher_public_catalog.py tests/integration/test_launcher_refusals.py \
	tests/integration/test_launcher_notebook_files.py tests/integration/test_datasets.py \
	tests/integration/test_launcher_datasets.py tests/security/test_launcher_datasets_attacks.py \
	tests/integration/test_kube_ensure.py \
	tests/integration/test_named_servers.py::test_a_readwriteonce_home_keeps_a_users_servers_on_one_node \
	tests/integration/test_named_servers.py::test_an_ordinary_user_cannot_touch_another_users_named_server
# the fast tier runs whole files on this many workers (hubs and clusters wait more than they
# compute); 1 runs it in one process
PYTEST_WORKERS ?= 3
XDIST = $(if $(filter-out 1,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder)
# the real tier on this many workers, each with a real control plane of its own
# (tests/fixtures/realcp.py); 1 runs it in one process, in the collection's order. Whole files
# per worker, the longest first (tests/fixtures/xdist_order.py), in every tier
REAL_WORKERS ?= 2
XDIST_REAL = $(if $(filter-out 1,$(REAL_WORKERS)),-n $(REAL_WORKERS) --dist loadfile --no-loadscope-reorder)
# the z2jh versions' tier on 2 workers (in one process it had done 19% of its tests after 19
# minutes in a run of this session; on 2 workers under load it all took 18). JupyterHub 5.5
# gives a managed service (the launcher in the hub) 10 s to answer; the dev hubs hide
# kubernetes_validate as the hub image does, which halves the launcher's start
# (kdash_hub/dev/hub.py), so 2 workers keep well inside it. Z2JH_WORKERS=1: one process
Z2JH_WORKERS ?= 2
XDIST_Z2JH = $(if $(filter-out 1,$(Z2JH_WORKERS)),-n $(Z2JH_WORKERS) --dist loadfile --no-loadscope-reorder)

.PHONY: code-server traefik s3-server setup system-packages python-packages node-packages demo demo-vscode test test-fast test-real kube-binaries lint bench settings-doc screenshots
# `make bench BENCH_ARGS=--quick` for the small sizes

setup: system-packages python-packages node-packages

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v kubectl >/dev/null 2>&1 || missing="$$missing kubernetes-client"; \
	if [ -n "$$missing" ]; then \
	  echo "setup: Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	else echo "setup: Debian packages: all there"; fi

# one progress line per step; the installers' own output goes to a log, shown when they fail
$(PY):
	@echo "setup: a virtualenv in $(VENV)"
	@python3 -m venv $(VENV)
	@$(PY) -m pip install -q -U pip "setuptools>=77" wheel > $(VENV)/setup.log 2>&1 || \
	  { cat $(VENV)/setup.log; exit 1; }

# kdash-hub-local (the local cluster, dev services, demo) is built from this repository too
# less rfc3987-syntax, jsonschema's optional IRI check (via jupyter_events' format-nongpl
# extra): it builds an Earley grammar at import, about 5 s of CPU in every hub, service and
# notebook process here, and nothing checks an "iri" format. jsonschema imports it only if it
# is there. The z2jh tier's venv keeps it, as the hub image has it
python-packages: $(PY)
	@echo "setup: Python packages (kdash-hub, kdash-hub-local, JupyterLab, test tools)"
	@{ $(PY) -m pip install -q -e ./kdash-hub-local -e '.[test,demo]' && \
	  $(PY) -m pip uninstall -q -y rfc3987-syntax; } > $(VENV)/setup.log 2>&1 || \
	  { cat $(VENV)/setup.log; exit 1; }

node-packages:
	@if [ -x node_modules/.bin/configurable-http-proxy ] && [ -d node_modules/oidc-provider ]; then \
	  echo "setup: npm packages: all there"; \
	else echo "setup: npm packages (configurable-http-proxy, oidc-provider)"; \
	  npm install --no-audit --no-fund --loglevel=error > .npm-setup.log 2>&1 || \
	    { cat .npm-setup.log; exit 1; }; rm -f .npm-setup.log; fi

demo: setup s3-server
	$(VENV)/bin/kdash-hub demo

# the S3 server that runs the MinIO template's pods in process mode and stands in for the
# datasets' S3 in the tests (tools/s3, built once into ~/.cache/kdash-hub/s3); without Go the
# demo's MinIO says it can't run here, and the dataset tests fail with the build's reason
s3-server: python-packages
	@echo "setup: the S3 server (tools/s3)"
	@$(PY) -m kdash_hub.dev.s3 > /dev/null 2> .s3-setup.log && rm -f .s3-setup.log || \
	  echo "setup: no S3 server here: $$(tail -1 .s3-setup.log)"

# code-server (VS Code in the browser) from npm: about 300 MB, native modules built here, a
# few minutes once, into ~/.cache/kdash-hub/code-server; the tests open VS Code for real
code-server: python-packages
	@$(MAKE) --no-print-directory system-packages APT_PACKAGES="build-essential libkrb5-dev ripgrep"
	@$(PY) -c "import asyncio, sys; from kdash_hub.dev.codeserver import ensure; \
	  sys.exit(asyncio.run(ensure(lambda line: print('setup: ' + line.removeprefix('demo: ')))) is None)"

# the demo with VS Code next to JupyterLab
demo-vscode: setup code-server
	$(VENV)/bin/kdash-hub demo --vscode

# two tiers: the fast one on the emulator (on the newest releases, then on the versions the
# z2jh 4.4.0 hub image ships), then the integration suite on a real control plane
test: setup
	$(VENV)/bin/ruff check .
	$(MAKE) --no-print-directory test-fast
	$(MAKE) --no-print-directory test-z2jh-versions
	$(MAKE) --no-print-directory test-real

# files that test the z2jh chart's own hub config: they run on the versions its hub image
# ships (test-z2jh-versions) and not again on the newest releases
Z2JH_TIER_ONLY := tests/integration/test_helm_hub_config.py

test-fast: setup s3-server code-server
	@echo "== fast tier: the emulator"
	$(VENV)/bin/python -m pytest -q -ra --durations=15 $(XDIST) $(addprefix --ignore=,$(Z2JH_TIER_ONLY))

# Traefik v3.6.12 from its pinned Go module (tools/traefik), built once into
# ~/.cache/kdash-hub/traefik: the real tier's public URLs go through it
traefik: python-packages
	@echo "setup: Traefik (tools/traefik)"
	@$(PY) -m kdash_hub.dev.traefik > /dev/null

# kube-apiserver, controller-manager, scheduler, etcd and helm from their pinned Go modules
# (tools/kube), built once into ~/.cache/kdash-hub/kube and then found there
kube-binaries: python-packages
	$(PY) -m kdash_hub.localcluster.real.build

test-real: setup kube-binaries s3-server traefik
	@echo "== real tier: a real Kubernetes control plane"
	KDASH_REAL_TIER=1 $(VENV)/bin/python -m pytest -q -ra --durations=15 $(XDIST_REAL) $(REAL_TIER_TESTS)

lint: python-packages
	$(VENV)/bin/ruff check .

bench: setup
	for b in benchmarks/bench_*.py; do m=$${b%.py}; $(PY) -m $${m//\//.} $(BENCH_ARGS) || exit 1; done

# the README's screenshots: the browser tests write them to artifacts/; copy them on purpose
screenshots: setup
	$(VENV)/bin/python -m pytest -q -m browser
	cp artifacts/profile-chooser.png artifacts/launcher.png artifacts/login.png \
	  artifacts/launcher-connection.png artifacts/launcher-datasets.png docs/images/

settings-doc: python-packages
	$(VENV)/bin/kdash-hub settings-doc > docs/settings.md

# The fast tier again, on the versions the z2jh 4.4.0 hub image ships (JupyterHub 5.5.0,
# KubeSpawner 7.0.0, oauthenticator 17.4.0, ldapauthenticator 2.0.2, kubernetes-asyncio
# 36.1.0: tests/constraints/z2jh-4.4.0.txt), in a venv of its own; `make test-fast` runs the
# newest releases in $(VENV). Extra pytest arguments: Z2JH_PYTEST_ARGS. Left out: the files
# that test only the local cluster itself (the emulator, its kubelet and pod network), which
# is dev tooling and no part of the hub image.
VENV_Z2JH ?= .venv-z2jh
Z2JH_CONSTRAINTS ?= tests/constraints/z2jh-4.4.0.txt
Z2JH_LOCALCLUSTER_ONLY := tests/integration/test_apiserver_parity.py \
	tests/integration/test_apiserver_podsecurity.py tests/integration/test_apiserver_semantics.py \
	tests/integration/test_localcluster_cli.py tests/integration/test_localcluster_kubelet.py \
	tests/integration/test_localcluster_netpolicy.py tests/integration/test_localcluster_podusers.py \
	tests/unit/test_apiserver_units.py tests/unit/test_kubelet_processes.py \
	tests/unit/test_netpolicy.py tests/unit/test_scheduler.py
Z2JH_PYTEST_ARGS ?= $(addprefix --ignore=,$(Z2JH_LOCALCLUSTER_ONLY))

$(VENV_Z2JH)/.installed: pyproject.toml kdash-hub-local/pyproject.toml $(Z2JH_CONSTRAINTS)
	python3 -m venv $(VENV_Z2JH)
	$(VENV_Z2JH)/bin/python -m pip install -q -U pip "setuptools>=77" wheel
	$(VENV_Z2JH)/bin/python -m pip install -q -c $(Z2JH_CONSTRAINTS) -e ./kdash-hub-local -e '.[test]'
	touch $@

z2jh-versions-venv: $(VENV_Z2JH)/.installed

test-z2jh-versions: system-packages node-packages z2jh-versions-venv s3-server code-server
	@echo "== fast tier on the z2jh 4.4.0 hub image's versions ($(Z2JH_CONSTRAINTS))"
	PATH=$(CURDIR)/$(VENV_Z2JH)/bin:$$PATH $(VENV_Z2JH)/bin/python -m pytest -q -ra $(XDIST_Z2JH) $(Z2JH_PYTEST_ARGS)
.PHONY: z2jh-versions-venv test-z2jh-versions
