# fhkit — build, test, demo, bench, fuzz. Everything a fresh machine needs is
# installed from here (Go itself is on the machine image).

GO       ?= go
BIN      := bin
OUT      := out
SHARED   ?= ../shared
FUZZTIME ?=
export CGO_ENABLED ?= 0

CMDS := fh-convert fh-run fh-fixture fh-flashhead-build fh-quantize

.PHONY: all build test vet demo bench fuzz conformance clean fixtures gemma3-1b asm-check

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

vet:
	$(GO) vet ./...

# The README's test command: static build, vet, every unit test (tests that
# need ../shared skip with a message when it is absent).
test: vet
	$(GO) build ./...
	$(GO) test -count=1 ./...
	@# The worker pool's hand-offs, the gated MLP's blocks (GatedMatVecs) and
	@# the batches split over threads under
	@# the race detector (which needs cgo).
	@if command -v cc >/dev/null 2>&1; then \
		echo "CGO_ENABLED=1 $(GO) test -race -count=1 -run 'Pool|Shares|Gated' ./runtime/cpu"; \
		CGO_ENABLED=1 $(GO) test -race -count=1 -run 'Pool|Shares|Gated' ./runtime/cpu && \
		echo "CGO_ENABLED=1 $(GO) test -race -count=1 -run 'BatchEqualsAlone|BatchLargerThanChunk' ./runtime/model" && \
		CGO_ENABLED=1 $(GO) test -race -count=1 -run 'BatchEqualsAlone|BatchLargerThanChunk' ./runtime/model; \
	else echo "make test: no C compiler, so the race-detector runs of the worker pool and split batches are skipped"; fi

# The main job end to end on the embedded default (the tiny Gemma-3 fixture,
# random weights): generate the checkpoint, convert it (bf16, and f32 as the
# dense reference), inspect it, verify it against the reference, generate.
demo: build
	@rm -rf $(OUT)/demo && mkdir -p $(OUT)/demo
	$(BIN)/fh-fixture --preset gemma3-tiny --out $(OUT)/demo/hf
	$(BIN)/fh-convert --in $(OUT)/demo/hf --out $(OUT)/demo/model.fhm
	$(BIN)/fh-convert --in $(OUT)/demo/hf --out $(OUT)/demo/model-f32.fhm --dtype f32
	$(BIN)/fh-run inspect $(OUT)/demo/model.fhm
	$(BIN)/fh-run verify --model $(OUT)/demo/model.fhm --baseline-model $(OUT)/demo/model-f32.fhm --min-top1 1
	$(BIN)/fh-flashhead-build --in $(OUT)/demo/model.fhm --out $(OUT)/demo/model-fh.fhm
	$(BIN)/fh-run verify --model $(OUT)/demo/model-fh.fhm --head flashhead --min-top1 0.9
	$(BIN)/fh-quantize --in $(OUT)/demo/model.fhm --out $(OUT)/demo/model-w4.fhm --w4a16
	$(BIN)/fh-run verify --model $(OUT)/demo/model-w4.fhm --baseline-model $(OUT)/demo/model.fhm
	$(BIN)/fh-run generate --model $(OUT)/demo/model-fh.fhm --chat --prompt "Hello, who are you?" --max-tokens 24

# Conformance against ../shared/conformance (real checkpoints and references).
# Fails, rather than skips, when SHARED is missing.
conformance:
	FHKIT_SHARED=$(abspath $(SHARED)) FHKIT_REQUIRE_SHARED=1 $(GO) test -count=1 -v -run 'Conformance|Gemma3|Stories' ./internal/conformance/ ./runtime/tokenizer/ ./flashhead-build/ ./quantize/

# Each fuzz target, from the committed seed corpora, for an execution count
# (about 12 s of each on the development VM; FUZZTIME overrides it for every
# target, e.g. FUZZTIME=100000x or FUZZTIME=10m). Counts, not durations: Go
# 1.26's fuzz coordinator can report "context deadline exceeded" as a
# failure when a -fuzztime duration (or -fuzzminimizetime) runs out while a
# worker is mid-input (go.dev/issue/75804, fixed in Go 1.27).
FUZZ_TARGETS := \
	./formats/safetensors:FuzzParse:800000 \
	./formats/fhm:FuzzParse:500000 \
	./formats/hf:FuzzParseConfig:800000 \
	./runtime/tokenizer:FuzzEncodeDecode:150000 \
	./runtime/serve:FuzzRequest:150000

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		rest=$${t%:*}; n=$${t##*:}; pkg=$${rest%%:*}; fn=$${rest##*:}; \
		ft="$(FUZZTIME)"; [ -n "$$ft" ] || ft=$${n}x; \
		echo "fuzz $$pkg $$fn ($$ft)"; \
		$(GO) test -run='^$$' -fuzz="^$$fn$$" -fuzztime=$$ft -fuzzminimizetime=1000x $$pkg; \
	done

# The committed assembly must be what its avo generators produce (CI).
# Overwrites runtime/cpu/*_amd64.s and stubs with the generators' output.
asm-check:
	$(GO) generate ./runtime/cpu
	@git diff --exit-code --stat -- runtime/cpu || { echo "asm-check: the committed assembly differs from go generate's output" >&2; exit 1; }
	@echo "asm-check: go generate ./runtime/cpu reproduces the committed assembly"

# Regenerate the committed small fixtures.
fixtures:
	$(GO) run ./cmd/fh-fixture --all --out testdata/fixtures

# The gemma-3-1b-shaped checkpoint (2 GB, generated on demand, never committed).
gemma3-1b: build
	@mkdir -p $(OUT)
	$(BIN)/fh-fixture --preset gemma3-1b --out $(OUT)/gemma3-1b

# Conversion benchmark on the gemma-3-1b-shaped fixture: copy time vs
# conversion time and the converter's peak RSS.
bench: gemma3-1b
	$(GO) test -run='^$$' -bench=. -benchtime=1x ./formats/... ./convert/...
	./scripts/bench-convert.sh $(OUT)/gemma3-1b $(OUT)

clean:
	rm -rf $(BIN) $(OUT)

# ---- CUDA backend (runtime/cuda; see runtime/cuda/README.md) ----
# kernels: regenerate the committed PTX from runtime/cuda/kernels/*.cu
# (needs nvcc 11.8: scripts/install-cuda-toolkit.sh). kernels-check: CI's
# check that the PTX regenerates identically and compiles with ptxas for
# sm_80/86/89/90 without spills. cuda-emu: build the CPU emulator of the
# driver API and print its path (for FH_CUDA_LIB). cuda-test: the kernel
# tests through the emulator; cuda-test-asan: the same with AddressSanitizer.
.PHONY: kernels kernels-check cuda-emu cuda-test cuda-test-asan

kernels:
	runtime/cuda/kernels.sh gen

kernels-check:
	runtime/cuda/kernels.sh check

cuda-emu:
	@command -v $${CXX:-g++} >/dev/null || { echo "cuda-emu: g++ not found (apt-get install g++)" >&2; exit 1; }
	@$(GO) run ./runtime/cuda/emu/cmd/cuda-emu --out $(abspath $(OUT))/cuda-emu

cuda-test:
	@command -v $${CXX:-g++} >/dev/null || { echo "cuda-test: g++ not found (apt-get install g++)" >&2; exit 1; }
	FH_CUDA_LIB=$$($(GO) run ./runtime/cuda/emu/cmd/cuda-emu --out $(abspath $(OUT))/cuda-emu) \
		FH_CUDA_CONFORMANCE=1 FHKIT_SHARED=$(abspath $(SHARED)) $(GO) test -count=1 ./runtime/cuda/...

# The test binary is built first and run with libasan preloaded: the Go
# process is not instrumented, only the emulator and the kernels are.
cuda-test-asan:
	@command -v $${CXX:-g++} >/dev/null || { echo "cuda-test-asan: g++ not found (apt-get install g++)" >&2; exit 1; }
	@mkdir -p $(OUT)
	$(GO) test -c -o $(abspath $(OUT))/cuda-asan.test ./runtime/cuda/
	cd runtime/cuda && \
		LD_PRELOAD=$$($(GO) run ./emu/cmd/cuda-emu --print-asan-runtime) \
		ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 \
		FH_CUDA_LIB=$$($(GO) run ./emu/cmd/cuda-emu --asan --out $(abspath $(OUT))/cuda-emu) \
		$(abspath $(OUT))/cuda-asan.test -test.count=1
