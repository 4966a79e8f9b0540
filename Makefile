# fhkit — build, test, demo, bench, fuzz. Everything a fresh machine needs is
# installed from here (Go itself is on the machine image).

GO       ?= go
BIN      := bin
OUT      := out
SHARED   ?= ../shared
FUZZTIME ?= 20s
export CGO_ENABLED ?= 0

CMDS := fh-convert fh-run fh-fixture fh-flashhead-build fh-quantize

.PHONY: all build test vet demo bench fuzz conformance clean fixtures gemma3-1b

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

# Each fuzz target for FUZZTIME, starting from the committed seed corpora.
FUZZ_TARGETS := \
	./formats/safetensors:FuzzParse \
	./formats/fhm:FuzzParse \
	./formats/hf:FuzzParseConfig \
	./runtime/tokenizer:FuzzEncodeDecode

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
		$(GO) test -run='^$$' -fuzz="^$$fn$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=2s $$pkg; \
	done

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
