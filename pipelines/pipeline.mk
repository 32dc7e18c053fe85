# datakit's whole pipeline: subjects -> cut-outs -> composites -> captions -> rewritten captions -> dataset.
#
#   make -f pipelines/pipeline.mk [VAR=value ...] all      (the root Makefile's `make demo` runs this)
#
# Every target is a stage's OUT/datakit.json: present means that stage finished. Make re-runs a stage
# when something it reads is newer, and the stage itself redoes only the items whose inputs changed,
# so editing one sample image redoes that image's cut-out, composites and captions, nothing else.
# Changing a variable (BG_COUNT=, TRIGGER=, ...) re-runs the stages it is passed to.
# Paths must not contain spaces (Make's own limit).

# -- what users override ---------------------------------------------------------------------------
DATAKIT   ?= datakit
SUBJECTS  ?= samples/subjects
OUT       ?= build
BG_COUNT  ?= 100
BG_ENGINE ?=
BG_MODEL  ?=
# A WD14 tagger (folder, or Hugging Face id in the local cache); `none` keeps the given captions.
TAGGER    ?= none
RULES     ?= samples/rules.toml
TRIGGER   ?= sail_kun
CONCEPT   ?= $(TRIGGER)
# Extra flags per stage, e.g. COMPOSITE_FLAGS="--size 512" EMIT_FLAGS="--target-steps 1600".
CUTOUT_FLAGS    ?=
COMPOSITE_FLAGS ?=
TAG_FLAGS       ?=
REWRITE_FLAGS   ?=
EMIT_FLAGS      ?=
# Optional review of the composites before emit (off by default). REVIEW=1 starts `datakit review`
# (the step prints the page's address and waits until "Save & finish" on the page); REVIEW_DECISIONS=FILE
# applies a review.json from an earlier session instead, without a browser (items it does not name are kept).
REVIEW           ?=
REVIEW_DECISIONS ?=
REVIEW_FLAGS     ?=
# Shown in the closing `datakit train` hint.
BASE_MODEL ?= path/to/base-model.safetensors

# -- derived -----------------------------------------------------------------------------------------
# The folder itself too: removing or adding a subject changes its time stamp.
SUBJECT_FILES := $(wildcard $(SUBJECTS)/*)
FLAGS_DIR     := $(OUT)/.flags

CUTOUT_ARGS    = $(CUTOUT_FLAGS)
COMPOSITE_ARGS = --bg-count $(BG_COUNT) $(if $(BG_ENGINE),--bg-engine $(BG_ENGINE)) $(if $(BG_MODEL),--bg-model $(BG_MODEL)) $(COMPOSITE_FLAGS)
TAG_ARGS       = --model $(TAGGER) $(TAG_FLAGS)
REWRITE_ARGS   = --rules $(RULES) --trigger $(TRIGGER) $(REWRITE_FLAGS)
REVIEW_ON     := $(if $(REVIEW_DECISIONS),1,$(filter-out 0 no false,$(REVIEW)))
REVIEW_ARGS    = $(if $(REVIEW_DECISIONS),--decisions $(REVIEW_DECISIONS)) $(REVIEW_FLAGS)
# What emit takes as the composites: the reviewed folder when the review step is on.
COMPOSITES     = $(if $(REVIEW_ON),$(OUT)/composite-reviewed,$(OUT)/composite-rewritten)
EMIT_ARGS      = --concept $(CONCEPT)=$(OUT)/originals-rewritten \
                 --concept $(CONCEPT)_with_background=$(COMPOSITES) $(EMIT_FLAGS)

# Exit status 3 means "finished, some inputs were skipped" (each is named in the stage's summary and
# manifest): the chain goes on with what was made. Any other failure stops it.
define stage
	@echo '$(strip $(1))'
	@$(1) || { rc=$$?; if [ $$rc -eq 3 ]; then echo "pipeline: some inputs were skipped (exit 3, named above); continuing" >&2; else exit $$rc; fi; }
endef

.PHONY: all FORCE

all: $(OUT)/dataset/datakit.json
	@echo ""
	@echo "datakit pipeline finished."
	@echo "  dataset:        $(OUT)/dataset  (kohya config: $(OUT)/dataset/dataset.toml)"
	@echo "  contact sheet:  $(or $(wildcard $(OUT)/composite/contact*),$(OUT)/composite/ (no contact sheet written))"
	@echo "  report:         $(OUT)/dataset/report.html"
	@echo "  plan:           $(OUT)/dataset/plan.csv"
	@echo "next, train a LoRA on it:"
	@echo "  $(DATAKIT) train $(OUT)/dataset --base-model $(BASE_MODEL) --method lora --output $(OUT)/lora"

# A stage's flags are a prerequisite: this file changes only when the flags do.
$(FLAGS_DIR)/%: FORCE
	@mkdir -p $(@D)
	@printf '%s\n' '$(value_$*)' | cmp -s - $@ 2>/dev/null || printf '%s\n' '$(value_$*)' > $@
value_cutout    = $(CUTOUT_ARGS)
value_composite = $(COMPOSITE_ARGS)
value_tag       = $(TAG_ARGS)
value_rewrite   = $(REWRITE_ARGS)
value_review    = $(REVIEW_ARGS)
value_emit      = $(EMIT_ARGS)

$(OUT)/cutout/datakit.json: $(SUBJECTS) $(SUBJECT_FILES) $(FLAGS_DIR)/cutout
	$(call stage,$(DATAKIT) cutout $(SUBJECTS) $(OUT)/cutout $(CUTOUT_ARGS))

$(OUT)/composite/datakit.json: $(OUT)/cutout/datakit.json $(FLAGS_DIR)/composite
	$(call stage,$(DATAKIT) composite $(OUT)/cutout $(OUT)/composite $(COMPOSITE_ARGS))

# The originals are tagged and rewritten too: their captions get the trigger first and keep the
# `white background` that is true of them; the composites' captions describe their scenes.
$(OUT)/originals-tagged/datakit.json: $(SUBJECTS) $(SUBJECT_FILES) $(FLAGS_DIR)/tag
	$(call stage,$(DATAKIT) tag $(SUBJECTS) $(OUT)/originals-tagged $(TAG_ARGS))

$(OUT)/composite-tagged/datakit.json: $(OUT)/composite/datakit.json $(FLAGS_DIR)/tag
	$(call stage,$(DATAKIT) tag $(OUT)/composite $(OUT)/composite-tagged $(TAG_ARGS))

$(OUT)/%-rewritten/datakit.json: $(OUT)/%-tagged/datakit.json $(RULES) $(FLAGS_DIR)/rewrite
	$(call stage,$(DATAKIT) tags rewrite $(OUT)/$*-tagged $(OUT)/$*-rewritten $(REWRITE_ARGS))

# The optional review: rejected composites stay out of the dataset, edited captions go in.
$(OUT)/composite-reviewed/datakit.json: $(OUT)/composite-rewritten/datakit.json $(FLAGS_DIR)/review $(REVIEW_DECISIONS)
	$(call stage,$(DATAKIT) review $(OUT)/composite-rewritten $(OUT)/composite-reviewed $(REVIEW_ARGS))

$(OUT)/dataset/datakit.json: $(OUT)/originals-rewritten/datakit.json $(COMPOSITES)/datakit.json $(FLAGS_DIR)/emit
	$(call stage,$(DATAKIT) emit $(OUT)/dataset $(EMIT_ARGS))

# Keep every stage's output even though some are reached only through pattern rules.
.SECONDARY:
