# The two commands: `make run` (the whole system, locally) and `make test` (every test).
# Both install what they need first (Debian packages through apt).

SWIFT ?= swift
CONFIGURATION ?= release

.PHONY: deps build build-debug run test smoke-run e2e browser check-deploy bench bench-redis bench-purge clean

deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build -c $(CONFIGURATION)

build-debug: deps
	$(SWIFT) build

## Builds in release mode, starts redis-server and every service; Ctrl-C stops them all.
run: build
	@CONFIGURATION=$(CONFIGURATION) deploy/local/run.sh

## Every test: the deploy manifests against the code, the Swift suites (real redis-server,
## real processes), the launcher smoke test, the end-to-end tests with a stock Socket.IO
## client (python-socketio), and the web client in headless Chromium (selenium).
test: deps
	@scripts/check-deploy.sh
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --no-parallel
	@CONFIGURATION=debug scripts/smoke-run.sh
	@CONFIGURATION=debug scripts/e2e-socketio.sh
	@CONFIGURATION=debug scripts/e2e-browser.sh

smoke-run:
	@CONFIGURATION=debug scripts/smoke-run.sh

e2e:
	@CONFIGURATION=debug scripts/e2e-socketio.sh

browser:
	@CONFIGURATION=debug scripts/e2e-browser.sh

check-deploy:
	@scripts/check-deploy.sh

## Measurements for BENCHMARKS.md (release build): the load tool against the stack
## (pairs, group, idle, churn, history, purge), written to BENCHMARKS.md.
bench: deps
	$(SWIFT) build -c release
	@scripts/bench.sh

bench-redis: deps
	$(SWIFT) build -c release --product chat-bench
	@scripts/bench-redis.sh

bench-purge: deps
	$(SWIFT) build -c release --product chat-bench
	@echo "machine: $$(nproc) cores, $$(free -g | awk '/Mem/{print $$2}') GiB, $$(uname -sr)"
	@echo "command: .build/release/chat-bench purge --messages 100000"
	@.build/release/chat-bench purge --messages 100000

clean:
	rm -rf .build run
