package fhm

// Quantization describes the weight quantization of a file (metadata key
// `quantization`; absent in a dense file). The tensors themselves follow
// the packed int4 layout of SPEC.md ("Packed int4 weights") and package
// formats/int4.
type Quantization struct {
	// Method is how the integers were chosen: "rtn", "gptq", or the source
	// format of an imported checkpoint ("compressed-tensors", "gptq-import").
	Method string `json:"method"`
	// Bits is the integer width; 4.
	Bits int `json:"bits"`
	// GroupSize is the requested number of consecutive input columns that
	// share a scale. A layer whose width it does not divide may use another
	// group size (see Layers); the scales' shape always tells.
	GroupSize int `json:"group_size"`
	// Symmetric is true when no zero-point tensors are stored (zero = 8).
	Symmetric bool `json:"symmetric"`
	// ScaleDType is the dtype of the scale tensors ("BF16" or "F16").
	ScaleDType string `json:"scale_dtype"`
	// Ignored lists the linear weights left in 16-bit (or the source
	// float dtype), by tensor name, with the reason in IgnoredWhy.
	Ignored []string `json:"ignored,omitempty"`
	// IgnoredWhy maps an ignored tensor name to the reason ("--ignore
	// pattern", "width not divisible", ...).
	IgnoredWhy map[string]string `json:"ignored_why,omitempty"`
	// Layers has one entry per quantized linear weight, in file order.
	Layers []QuantizedLayer `json:"layers,omitempty"`
	// Calibration describes the GPTQ calibration data (nil for RTN).
	Calibration *Calibration `json:"calibration,omitempty"`
	// Tool names the program that quantized the file.
	Tool string `json:"tool,omitempty"`
}

// QuantizedLayer records one quantized linear weight.
type QuantizedLayer struct {
	// Name is the dense weight's name (`model.layers.0.mlp.up_proj.weight`).
	Name string `json:"name"`
	// GroupSize is the group size used for this layer.
	GroupSize int `json:"group_size"`
	// WeightRelError is ‖W − Ŵ‖ / ‖W‖ (Frobenius norm) against the dense
	// weight the quantizer read.
	WeightRelError float64 `json:"weight_rel_error"`
	// OutputRelError is ‖WX − ŴX‖ / ‖WX‖ on the calibration inputs X of
	// this layer (GPTQ only), and RTNOutputRelError the same for RTN on
	// the same X, for comparison.
	OutputRelError    float64 `json:"output_rel_error,omitempty"`
	RTNOutputRelError float64 `json:"rtn_output_rel_error,omitempty"`
}

// Calibration describes the data GPTQ saw.
type Calibration struct {
	// Source is the --calib file name, or "self-generated".
	Source    string  `json:"source"`
	Sequences int     `json:"sequences"`
	Tokens    int     `json:"tokens"`
	Damping   float64 `json:"damping"`
	ActOrder  bool    `json:"act_order"`
	BlockSize int     `json:"block_size"`
}
