# tlsrelay — see README.md. `make bench` is the main job; `make test` the test suite.
GO        ?= go
BIN       := bin
PKGS      := ./...
# BENCH_QUICK=1 make bench: the short run (about 2.5 minutes; under 2 without root, which skips the sustained-rate row).
BENCH_ARGS ?=

.PHONY: all build build-boring build-openssl build-baseline test test-short bench bench-boring bench-go demo lint fuzz bench-deps image clean

all: build

# Every build says what it is (`tlsrelay -V`), -buildvcs=false or not.
COMMIT  := $(shell git describe --always --dirty --abbrev=12 2>/dev/null)
LDFLAGS := -X main.commit=$(COMMIT)

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/tlsrelay ./cmd/tlsrelay
	$(GO) build -o $(BIN)/tlsrelay-bench ./cmd/tlsrelay-bench

# tlsrelay built on BoringCrypto (the module inside the Go distribution,
# through cgo): RSA signatures about 1.6x faster, P-256 slower; see
# docs/benchmarks.md ("BoringCrypto build") for the rows it wins and loses.
build-boring:
	rm -f $(BIN)/tlsrelay-boring
	CGO_ENABLED=1 GOEXPERIMENT=boringcrypto $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/tlsrelay-boring ./cmd/tlsrelay

# tlsrelay whose RSA client-certificate signatures are computed by OpenSSL's
# libcrypto (opened at run time: libcrypto.so.3, Debian's libssl3; without it
# the binary signs with Go), through cgo: Go's RSA-2048 signature costs ~3.5x
# OpenSSL's on the bench machine. crypto/tls still runs every handshake.
# `tlsrelay -V` says which signs.
build-openssl:
	rm -f $(BIN)/tlsrelay-openssl
	CGO_ENABLED=1 $(GO) build -ldflags '$(LDFLAGS)' -tags openssl -o $(BIN)/tlsrelay-openssl ./cmd/tlsrelay

# The whole suite with the race detector: unit, integration over loopback,
# and the differential tests against nginx and openssl when they are
# installed (.ci/run installs them).
test: lint
	$(GO) test -race -timeout 14m -count=1 $(PKGS)
	$(GO) vet -tags openssl ./tlsbridge ./cmd/tlsrelay
	$(GO) test -race -count=1 -tags openssl ./tlsbridge

test-short:
	$(GO) test -short -count=1 $(PKGS)

# The headline: builds both binaries, runs tlsrelay beside NGINX (and HAProxy)
# when installed, writes BENCHMARKS.md, bench/results.json and the charts.
# The handshake rows also measure the BoringCrypto build (build-boring) and
# the OpenSSL-signer build (build-openssl), each in a column of its own; both
# need cgo, and without a C compiler they are left out.
# BASELINE=<git ref> also builds that revision (in a temporary worktree,
# not in your tree) and measures it in the handshake, throughput and memory rows, in
# the same alternating rounds, in a column of its own with a
# tlsrelay/baseline ratio column. Without BASELINE: the last release tag,
# else the build the committed BENCHMARKS.md measured (the commit in
# bench/results.json: the previous main head). BASELINE=none measures no
# baseline; so does BENCH_QUICK=1 unless BASELINE is given. A baseline
# that cannot be built (a shallow clone) is left out with a note.
BASELINE ?= $(if $(filter 1,$(BENCH_QUICK)),none,$(shell git describe --tags --abbrev=0 2>/dev/null || sed -n 's/.*"tlsrelay version: [^"]*commit \([0-9a-f]\{7,\}\)".*/\1/p' bench/results.json 2>/dev/null | head -n 1))
BASE_REF   = $(filter-out none,$(BASELINE))
bench: build
	-@$(MAKE) --no-print-directory build-boring
	-@$(MAKE) --no-print-directory build-openssl
	@rm -f $(BIN)/tlsrelay-baseline
	-@if [ -n "$(BASE_REF)" ]; then $(MAKE) --no-print-directory build-baseline || echo "note: the baseline $(BASE_REF) could not be built; measuring without it"; fi
	./$(BIN)/tlsrelay-bench -tlsrelay $(BIN)/tlsrelay $$([ -x $(BIN)/tlsrelay-boring ] && echo -tlsrelay-boring $(BIN)/tlsrelay-boring) $$([ -x $(BIN)/tlsrelay-openssl ] && echo -tlsrelay-openssl $(BIN)/tlsrelay-openssl) $$([ -x $(BIN)/tlsrelay-baseline ] && echo -baseline $(BIN)/tlsrelay-baseline -baseline-ref "$$(git rev-parse --short $(BASE_REF))") -out . $(BENCH_ARGS)

# The BASELINE revision's binary, built in a temporary git worktree.
build-baseline:
	@test -n "$(BASE_REF)" || { echo "build-baseline: set BASELINE=<git ref>"; exit 2; }
	rm -rf $(BIN)/baseline-src $(BIN)/tlsrelay-baseline
	git worktree add --detach $(BIN)/baseline-src $(BASE_REF)
	cd $(BIN)/baseline-src && $(GO) build -o ../tlsrelay-baseline ./cmd/tlsrelay; rc=$$?; cd - >/dev/null; git worktree remove --force $(BIN)/baseline-src; exit $$rc

# Only the handshake rows, the BoringCrypto build beside the default one,
# into bench-boring/ (BENCHMARKS.md there).
bench-boring: build build-boring
	mkdir -p bench-boring
	./$(BIN)/tlsrelay-bench -tlsrelay $(BIN)/tlsrelay -tlsrelay-boring $(BIN)/tlsrelay-boring -out bench-boring -only handshake $(BENCH_ARGS)

# Go micro-benchmarks only.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

demo: build
	./$(BIN)/tlsrelay demo

lint:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# A minute of fuzzing per parser.
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./engine/conf -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)
	$(GO) test ./engine/conf -run '^$$' -fuzz '^FuzzParseIdentity$$' -fuzztime $(FUZZTIME)
	$(GO) test ./engine/conf -run '^$$' -fuzz FuzzCompileTemplate -fuzztime $(FUZZTIME)
	$(GO) test ./engine/conf -run '^$$' -fuzz FuzzParseUpstreamAddr -fuzztime $(FUZZTIME)
	$(GO) test ./tlsbridge -run '^$$' -fuzz FuzzCipherString -fuzztime $(FUZZTIME)
	$(GO) test ./engine -run '^$$' -fuzz FuzzCompileFormat -fuzztime $(FUZZTIME)
	$(GO) test ./engine -run '^$$' -fuzz FuzzNameServerAddr -fuzztime $(FUZZTIME)
	$(GO) test ./tlsbridge -run '^$$' -fuzz FuzzNameTemplate -fuzztime $(FUZZTIME)
	$(GO) test ./tlsbridge -run '^$$' -fuzz FuzzPrivateKey -fuzztime $(FUZZTIME)
	$(GO) test ./tlsbridge -run '^$$' -fuzz FuzzDriverUpstreamBytes -fuzztime $(FUZZTIME)
	$(GO) test ./engine/proxyproto -run '^$$' -fuzz FuzzRead -fuzztime $(FUZZTIME)

# The peers that `make bench` compares against, and the programs the
# differential tests call, from Debian's packages.
bench-deps:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y nginx libnginx-mod-stream haproxy openssl

# A container image from scratch (cmd/tlsrelay/Containerfile): the static binary, its
# license, a non-root user. With podman, else docker. IMAGE names it.
IMAGE  ?= tlsrelay:$(COMMIT)
ENGINE ?= $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null)
image:
	@test -n "$(ENGINE)" || { echo "make image: neither podman nor docker is installed"; exit 1; }
	rm -rf $(BIN)/image && mkdir -p $(BIN)/image && cp LICENSE $(BIN)/image/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS) -s -w' -o $(BIN)/image/tlsrelay ./cmd/tlsrelay
	$(ENGINE) build -f cmd/tlsrelay/Containerfile -t $(IMAGE) $(BIN)/image

clean:
	rm -rf $(BIN)
