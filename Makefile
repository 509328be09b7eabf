# The two commands a newcomer runs (see README.md):
#   make demo   set up and run a real call between two peers
#   make test   set up and run the whole suite (lint, types, tests)
# Each target installs what it needs: a virtualenv with the package, and the
# Debian packages the tests drive (sipp from sip-tester, Kamailio, baresip,
# nftables for the packet-loss tests).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sipd-installed
DEB_PACKAGES := sip-tester nftables kamailio kamailio-tls-modules baresip-core dnsmasq-base
DEB_PACKAGES += libopus0
# Captures: the tests read sipd's pcap files with tshark and sngrep (also its HEP collector).
DEB_PACKAGES += tshark sngrep
# The console's browser tests and screenshots (docs/console.md) run headless Chromium.
DEB_PACKAGES += chromium
PYTEST_ARGS ?=

.PHONY: test lint typecheck pytest sysdeps venv bench clean demo cluster

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.py
	$(PY) -m pip install -q --upgrade pip
	# compat mode puts the checkout itself on sys.path, so twistd finds
	# twisted/plugins/sipd_plugin.py without copying it into site-packages.
	$(PY) -m pip install -q -e ".[test]" --config-settings editable_mode=compat
	touch $(STAMP)

venv: $(STAMP)

# apt waits (up to 10 minutes) for the dpkg lock instead of failing at once
# when something else holds it, e.g. unattended upgrades on a fresh machine.
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600

# Installs the Debian packages only when one is missing, so a warm machine
# does not touch apt at all. DPkg::Lock::Timeout does not cover the package
# lists' lock that `apt-get update` takes, so update is retried while that
# lock is busy (10 minutes at most); any other failure stops at once.
sysdeps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  tries=0; until out=$$($(APT_GET) update -qq 2>&1); do \
	    case "$$out" in *"Could not get lock"*) ;; *) echo "$$out" >&2; exit 1;; esac; \
	    tries=$$((tries + 1)); [ $$tries -lt 120 ] || { echo "$$out" >&2; exit 1; }; \
	    [ $$tries -gt 1 ] || echo "apt is busy (another apt or dpkg runs); waiting for its lock"; \
	    sleep 5; \
	  done; \
	  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections; \
	  $(APT_GET) install -y -qq $$missing; \
	fi

lint: venv
	$(VENV)/bin/ruff check sipd tests bench examples setup.py
	$(VENV)/bin/ruff format --check sipd tests bench examples setup.py

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv sysdeps
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest

# Bob (port 5061) answers, Alice (any free port) calls him for ~3 s and hangs up; both
# print the states their call went through. ALICE_PORT / BOB_PORT /
# CALL_SECONDS override the defaults.
demo: venv
	$(PY) examples/demo/run.py

# Every benchmark, each ending with its RESULT line (several minutes).
bench: venv sysdeps
	$(PY) bench/parse.py
	$(PY) bench/codec.py
	$(PY) bench/media.py --srtp
	bash bench/cps.sh
	$(PY) bench/fuzz.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis output

# A local cluster (docs/cluster.md): Kamailio on CLUSTER_PROXY in front of
# CLUSTER_WORKERS sipd workers (twistd sipd --workers, settings in
# etc/kamailio/sipd-worker.yaml). Runs in the foreground; Ctrl-C (or
# `kill <the PIDs it prints>`) stops both, the workers draining first.
CLUSTER_WORKERS ?= 2
CLUSTER_PROXY ?= 127.0.0.1:5060
CLUSTER_WORKER_LISTEN ?= 127.0.0.1:5071
CLUSTER_RPC ?= 127.0.0.1:5069
CLUSTER_RUN ?= /tmp/sipd-cluster
cluster: venv
	@run="$(CLUSTER_RUN)"; mkdir -p "$$run"; rm -f "$$run/dispatcher.list"; \
	$(PY) -c "import sys; from twisted.scripts.twistd import run; sys.exit(run())" -n --pidfile= \
	  sipd --config etc/kamailio/sipd-worker.yaml --workers $(CLUSTER_WORKERS) \
	  --listen $(CLUSTER_WORKER_LISTEN) --outbound-proxy sip:$(CLUSTER_PROXY) \
	  --dispatcher-list "$$run/dispatcher.list" & sipd=$$!; \
	for i in $$(seq 100); do [ -s "$$run/dispatcher.list" ] && break; sleep 0.1; done; \
	[ -s "$$run/dispatcher.list" ] || { kill -TERM $$sipd; wait $$sipd; exit 1; }; \
	/usr/sbin/kamailio -f etc/kamailio/kamailio.cfg -DD -E -l udp:$(CLUSTER_PROXY) \
	  -A "DS_LIST=\"$$run/dispatcher.list\"" -A "RPC_SOCKET=\"udp:$(CLUSTER_RPC)\"" \
	  -A "CTL_SOCKET=\"unix:$$run/kamailio_ctl\"" -Y "$$run" -P "$$run/kamailio.pid" -w "$$run" \
	  2>"$$run/kamailio.log" & kam=$$!; \
	echo "cluster: Kamailio (pid $$kam, log $$run/kamailio.log) on $(CLUSTER_PROXY) ->" \
	  "$(CLUSTER_WORKERS) sipd workers (supervisor pid $$sipd) from $(CLUSTER_WORKER_LISTEN)"; \
	echo "cluster: stop with Ctrl-C, or: kill $$sipd $$kam;" \
	  "workers: kamcmd -s unix:$$run/kamailio_ctl dispatcher.list"; \
	trap 'kill -TERM $$sipd $$kam 2>/dev/null' INT TERM; \
	wait $$sipd; kill -TERM $$kam 2>/dev/null; wait $$kam; true

# The console's screenshots in docs/img (docs/console.md), taken by its browser test
# against a real daemon with live calls; never edited by hand.
.PHONY: console-screenshots
console-screenshots: venv sysdeps
	SIPD_SCREENSHOTS=$(CURDIR)/docs/img $(VENV)/bin/pytest -q \
	  tests/integration/test_console.py::test_the_console_shows_live_calls_ladders_and_redacted_captures
