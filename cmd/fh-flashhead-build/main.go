// Command fh-flashhead-build clusters the LM head of a .fhm model into a
// FlashHead (balanced clusters of equal size) and writes a copy of the model
// with the FlashHead tensors added; it also exports and imports the
// clustering cache of the reference vLLM plugin (embedl/flash-head).
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/pflag"

	flashhead "github.com/fhkit/fhkit/flashhead-build"
	"github.com/fhkit/fhkit/formats/atomicfile"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/internal/cli"
	"github.com/fhkit/fhkit/runtime/cpu"
)

const name = "fh-flashhead-build"

const usage = `Usage: fh-flashhead-build --in MODEL.fhm --out OUT.fhm [options]

Partitions the rows of the model's LM head (lm_head.weight, or the tied
model.embed_tokens.weight) into K = ceil(V / cluster-size) clusters of
exactly cluster-size slots by spherical balanced k-means, and writes OUT.fhm:
every tensor and the metadata of MODEL.fhm plus the FlashHead tensors
(flashhead.centroids, flashhead.vocab_map, flashhead.w_perm) and
metadata. When V is not a multiple of the cluster size, K*cap - V padding
slots (vocab id -1, zero rows) fill the last clusters, one each. The EOS
ids of the model are recorded as always-scored special tokens. The same
input and options give the same output bytes. The output appears only when
complete.

--export-embedl DIR also writes the clustering in the reference vLLM
plugin's format: DIR/flash_head_assets/clustering_cache.safetensors,
DIR/flash_head_assets/clustering_config.json, and
DIR/flashhead_config_fields.json with the config.json fields the plugin
reads (the Hugging Face exporter merges them into config.json).
--import-embedl DIR takes the clusters from such a cache instead of
clustering (n_probes and flash_head_special_token_ids from
DIR/flashhead_config_fields.json or DIR/config.json when present).

Examples:
  fh-flashhead-build --in gemma-3-1b-it.fhm --out gemma-3-1b-it-fh.fhm
  fh-flashhead-build --in llama.fhm --out llama-fh.fhm --cluster-size 16 --probes 256 --seed 7 --json
  fh-flashhead-build --in model.fhm --out model-fh.fhm --export-embedl ./hf-export
  fh-flashhead-build --in model.fhm --out model-fh.fhm --import-embedl ./embedl/gemma-3-1b-it-FlashHead
  fh-flashhead-build --in model-fh.fhm --out model-fh2.fhm --force --cluster-size 32

Exit status: 0 on success, 1 on an error, 2 on a usage error.

Flags:
`

func main() { cli.Main(name, run) }

// summary is the --json output.
type summary struct {
	Input           string  `json:"input"`
	Output          string  `json:"output,omitempty"`
	ExportDir       string  `json:"export_embedl,omitempty"`
	Source          string  `json:"source"`
	Vocab           int     `json:"vocab"`
	Hidden          int     `json:"hidden"`
	Clusters        int     `json:"clusters"`
	ClusterSize     int     `json:"cluster_size"`
	PaddingSlots    int     `json:"padding_slots"`
	Probes          int     `json:"probes"`
	SpecialTokenIDs []int   `json:"special_token_ids"`
	MeanCosine      float64 `json:"mean_cosine"`
	Seed            uint64  `json:"seed"`
	Iterations      int     `json:"iterations"`
	ClusterSeconds  float64 `json:"cluster_seconds"`
	Seconds         float64 `json:"seconds"`
}

func run(args []string, stdout, stderr io.Writer) error {
	start := time.Now()
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	in := fs.String("in", "", "input .fhm model (required)")
	out := fs.String("out", "", "output .fhm model (required unless --export-embedl is given)")
	clusterSize := fs.Int("cluster-size", flashhead.DefaultClusterSize, "slots per cluster (cap); K = ceil(vocab / cap)")
	probes := fs.Int("probes", 0, "default number of probed clusters stored in the file (0 = 256, at most half the clusters)")
	iters := fs.Int("iters", flashhead.DefaultIterations, "balanced assignment iterations (stop early when no token moves)")
	lloyd := fs.Int("lloyd-iters", flashhead.DefaultLloydIterations, "unconstrained spherical k-means iterations before the balanced ones (0: none)")
	cands := fs.Int("candidates", flashhead.DefaultCandidates, "clusters each token is scored against in a balanced iteration")
	search := fs.String("search", flashhead.SearchAuto, "cluster search: auto, exact (every cluster) or graph (centroid-graph neighbours)")
	seed := fs.Uint64("seed", 0, "random seed of the clustering")
	threads := fs.Int("threads", 0, "threads (0: all cores)")
	exportDir := fs.String("export-embedl", "", "also write the clustering in the reference vLLM plugin's format under DIR")
	importDir := fs.String("import-embedl", "", "take the clusters from the plugin cache in DIR instead of clustering")
	force := fs.Bool("force", false, "replace the FlashHead of an input that already has one")
	asJSON := fs.Bool("json", false, "print the summary as one JSON object")
	quiet := fs.BoolP("quiet", "q", false, "no progress bar")
	fs.Usage = func() { fmt.Fprint(stdout, usage); fmt.Fprint(stdout, fs.FlagUsages()) }
	if err := cli.ParseFlags(fs, args); err != nil {
		if err == pflag.ErrHelp {
			fs.Usage()
		}
		return err
	}
	switch {
	case *in == "":
		return cli.Usagef("--in is required")
	case *out == "" && *exportDir == "":
		return cli.Usagef("--out is required (or --export-embedl alone to export the clustering only)")
	case fs.NArg() > 0:
		return cli.Usagef("unexpected argument %q", fs.Arg(0))
	case *clusterSize < 1:
		return cli.Usagef("--cluster-size %d: must be at least 1", *clusterSize)
	case *probes < 0:
		return cli.Usagef("--probes %d: must be at least 1 (or 0 for the default)", *probes)
	case *iters < 1:
		return cli.Usagef("--iters %d: must be at least 1", *iters)
	case *lloyd < 0:
		return cli.Usagef("--lloyd-iters %d: must be at least 0", *lloyd)
	case *cands < 2:
		return cli.Usagef("--candidates %d: must be at least 2", *cands)
	case *threads < 0:
		return cli.Usagef("--threads %d: must be at least 0", *threads)
	case *search != flashhead.SearchAuto && *search != flashhead.SearchExact && *search != flashhead.SearchGraph:
		return cli.Usagef("--search %q: want auto, exact or graph", *search)
	case *importDir != "" && *exportDir != "":
		return cli.Usagef("--import-embedl and --export-embedl together would only copy the cache")
	}
	if *importDir != "" {
		for _, f := range []string{"cluster-size", "iters", "lloyd-iters", "candidates", "search", "seed"} {
			if fs.Changed(f) {
				return cli.Usagef("--%s does not apply with --import-embedl (the clusters come from the cache)", f)
			}
		}
	}

	// Remove partial outputs on an interrupt.
	var temps []string
	if *out != "" {
		temps = append(temps, atomicfile.TempPath(*out))
	}
	if *exportDir != "" {
		assets := filepath.Join(*exportDir, flashhead.EmbedlAssetsDir)
		temps = append(temps, atomicfile.TempPath(filepath.Join(assets, flashhead.EmbedlCacheFile)),
			atomicfile.TempPath(filepath.Join(assets, flashhead.EmbedlConfigFile)),
			atomicfile.TempPath(filepath.Join(*exportDir, flashhead.EmbedlFieldsFile)))
	}
	stop := cli.RemoveOnSignal(temps...)
	defer stop()

	f, err := fhm.Open(*in)
	if err != nil {
		return err
	}
	defer f.Close()
	if f.Metadata.FlashHead != nil && !*force && *out != "" {
		return fmt.Errorf("%s already holds a FlashHead (%d clusters of %d, source %s): use --force to replace it",
			*in, f.Metadata.FlashHead.NumClusters, f.Metadata.FlashHead.ClusterSize, f.Metadata.FlashHead.Source)
	}
	rows, _, err := flashhead.HeadMatrix(f)
	if err != nil {
		return err
	}
	showBars := !*quiet && !*asJSON && cli.IsTerminal(stderr)

	var head *flashhead.Head
	if *importDir != "" {
		head, err = importHead(*importDir, rows, f, fs.Changed("probes"), *probes)
		if err != nil {
			return err
		}
	} else {
		var bar *progressbar.ProgressBar
		opts := flashhead.Options{
			ClusterSize: *clusterSize, Probes: *probes, Iterations: *iters, LloydIterations: *lloyd,
			Candidates: *cands, Search: *search, Seed: *seed, Threads: *threads,
			SpecialTokenIDs: f.Metadata.Model.EOSTokenIDs,
		}
		if *lloyd == 0 {
			opts.LloydIterations = -1
		}
		if showBars {
			opts.Progress = func(stage string, done, total int) {
				if bar == nil {
					bar = progressbar.NewOptions(total,
						progressbar.OptionSetWriter(stderr),
						progressbar.OptionSetWidth(30),
						progressbar.OptionThrottle(200*time.Millisecond),
						progressbar.OptionSetPredictTime(true),
						progressbar.OptionShowElapsedTimeOnFinish(),
						progressbar.OptionClearOnFinish(),
					)
				}
				bar.Describe("clustering: " + stage)
				bar.Set(done)
			}
		}
		head, err = flashhead.Build(rows, opts)
		if bar != nil {
			bar.Finish()
		}
		if err != nil {
			return err
		}
	}

	if *out != "" {
		var bar *cli.Progress
		err := flashhead.Write(f, *out, head, head.Metadata(), flashhead.WriteOptions{
			Replace: *force,
			Progress: func(done, total int64) {
				if bar == nil {
					bar = cli.NewProgress(stderr, total, "writing", !showBars)
				}
				bar.Set(done)
			},
		})
		bar.Finish()
		if err != nil {
			return err
		}
	}
	if *exportDir != "" {
		if err := flashhead.ExportEmbedl(*exportDir, head, flashhead.FlashHeadArchitecture(&f.Metadata)); err != nil {
			return err
		}
	}

	s := summary{
		Input: *in, Output: *out, ExportDir: *exportDir, Source: head.Source,
		Vocab: head.Vocab, Hidden: head.Dim, Clusters: head.NumClusters, ClusterSize: head.ClusterSize,
		PaddingSlots: head.PaddingSlots(), Probes: head.Probes, SpecialTokenIDs: head.SpecialTokenIDs,
		MeanCosine: head.MeanCosine, Seed: head.Seed, Iterations: head.Iterations,
		ClusterSeconds: head.Seconds, Seconds: time.Since(start).Seconds(),
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(s)
	}
	dest := *out
	if dest == "" {
		dest = *exportDir
	}
	fmt.Fprintf(stdout, "%s: %d clusters of %d (%d padding slots), %d probes, mean cosine %.4f, %s, %.2f s\n",
		dest, s.Clusters, s.ClusterSize, s.PaddingSlots, s.Probes, s.MeanCosine, s.Source, s.Seconds)
	return nil
}

// importHead reads a plugin cache and sets the probes and special ids from
// the exported fields file or config.json beside it (the flag wins when
// given), else the defaults: --probes and the model's EOS ids.
func importHead(dir string, rows cpu.Mat, f *fhm.File, probesSet bool, probes int) (*flashhead.Head, error) {
	assets, err := flashhead.ResolveEmbedlDir(dir)
	if err != nil {
		return nil, err
	}
	h, err := flashhead.ImportEmbedl(assets, rows)
	if err != nil {
		return nil, err
	}
	special := f.Metadata.Model.EOSTokenIDs
	for _, cfgName := range []string{flashhead.EmbedlFieldsFile, "config.json"} {
		p := filepath.Join(dir, cfgName)
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		fields, hasSpecial, err := flashhead.ParseEmbedlFields(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if fields.NProbes > 0 && !probesSet {
			probes = fields.NProbes
		}
		if hasSpecial {
			special = fields.FlashHeadSpecialTokenIDs
		}
		break
	}
	h.Probes = min(probes, h.NumClusters)
	if probes == 0 {
		h.Probes = flashhead.DefaultProbesFor(h.NumClusters)
	}
	h.SpecialTokenIDs = flashhead.SpecialIDs(special, h.Vocab)
	return h, nil
}
