package hf

import (
	"errors"
	"fmt"

	"github.com/fhkit/fhkit/formats/arch"
)

// GenerationConfigName is the file name of the generation defaults.
const GenerationConfigName = "generation_config.json"

// GenerationConfig holds the fields of generation_config.json fhkit uses.
// A nil pointer means the field is absent (or null).
type GenerationConfig struct {
	BOSTokenID *int
	// EOSTokenIDs is eos_token_id (an integer or a list), in file order.
	EOSTokenIDs []int
	PadTokenID  *int

	DoSample          *bool
	Temperature       *float64
	TopK              *int
	TopP              *float64
	MinP              *float64
	RepetitionPenalty *float64
	MaxLength         *int
	MaxNewTokens      *int
}

// ParseGenerationConfig parses generation_config.json. Errors name the file
// and the field.
func ParseGenerationConfig(data []byte) (*GenerationConfig, error) {
	return parseGenerationConfig(GenerationConfigName, data)
}

// parseGenerationConfig is ParseGenerationConfig with the file name used in
// errors.
func parseGenerationConfig(file string, data []byte) (*GenerationConfig, error) {
	var errs []error
	o, err := decodeObject(file, data, &errs)
	if err != nil {
		return nil, err
	}
	g := &GenerationConfig{}
	optInt := func(key string, min int) *int {
		v, ok := o.int(key)
		if !ok {
			return nil
		}
		if v < min {
			o.fail(key, "%d: must be >= %d", v, min)
		}
		return &v
	}
	optFloat := func(key string, min, max float64) *float64 {
		v, ok := o.float(key)
		if !ok {
			return nil
		}
		if v < min || v > max {
			o.fail(key, "%g: must be in [%g, %g]", v, min, max)
		}
		return &v
	}
	g.BOSTokenID = optInt("bos_token_id", 0)
	g.PadTokenID = optInt("pad_token_id", 0)
	if ids, ok := o.ints("eos_token_id"); ok {
		for _, id := range ids {
			if id < 0 {
				o.fail("eos_token_id", "%d: must be >= 0", id)
			}
		}
		g.EOSTokenIDs = unionIDs(nil, ids)
	}
	if v, ok := o.bool("do_sample"); ok {
		g.DoSample = &v
	}
	const huge = 1e300
	g.Temperature = optFloat("temperature", 0, huge)
	g.TopK = optInt("top_k", 0)
	g.TopP = optFloat("top_p", 0, 1)
	g.MinP = optFloat("min_p", 0, 1)
	g.RepetitionPenalty = optFloat("repetition_penalty", 0, huge)
	if g.RepetitionPenalty != nil && *g.RepetitionPenalty == 0 {
		o.fail("repetition_penalty", "0: must be positive")
	}
	g.MaxLength = optInt("max_length", 0)
	g.MaxNewTokens = optInt("max_new_tokens", 0)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return g, nil
}

// ApplyGeneration merges the special-token ids of g into cfg: the EOS ids
// become the union of cfg's and g's (cfg's first, in order), and g's BOS and
// pad ids fill in where cfg has none (-1). It checks the merged ids against
// the vocabulary; the error names generation_config.json.
func ApplyGeneration(cfg *arch.Config, g *GenerationConfig) error {
	if g == nil {
		return nil
	}
	return applyGeneration(GenerationConfigName, cfg, g)
}

// applyGeneration is ApplyGeneration with the file name used in errors.
func applyGeneration(file string, cfg *arch.Config, g *GenerationConfig) error {
	check := func(key string, id int) error {
		if id < 0 || id >= cfg.VocabSize {
			return fmt.Errorf("%s: %s %d outside the vocabulary [0, %d) of config.json", file, key, id, cfg.VocabSize)
		}
		return nil
	}
	var errs []error
	for _, id := range g.EOSTokenIDs {
		if err := check("eos_token_id", id); err != nil {
			errs = append(errs, err)
		}
	}
	if g.BOSTokenID != nil {
		if err := check("bos_token_id", *g.BOSTokenID); err != nil {
			errs = append(errs, err)
		}
	}
	if g.PadTokenID != nil {
		if err := check("pad_token_id", *g.PadTokenID); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	cfg.EOSTokenIDs = unionIDs(append([]int(nil), cfg.EOSTokenIDs...), g.EOSTokenIDs)
	if cfg.BOSTokenID < 0 && g.BOSTokenID != nil {
		cfg.BOSTokenID = *g.BOSTokenID
	}
	if cfg.PadTokenID < 0 && g.PadTokenID != nil {
		cfg.PadTokenID = *g.PadTokenID
	}
	return nil
}
