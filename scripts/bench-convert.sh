#!/usr/bin/env bash
# Measures fh-convert against copying the same checkpoint, in one run:
#   copy    = cp -r DIR OUT/copy && sync      (fh-convert fsyncs its output, so the copy is synced too)
#   convert = fh-convert --in DIR --out OUT/bench.fhm
# Runs are alternated (N each, default 5) and the medians compared; the
# converter's peak RSS (from /proc/self/status VmHWM via getrusage) is
# compared with the checkpoint size.
# Usage: scripts/bench-convert.sh CHECKPOINT_DIR OUT_DIR [N]
set -euo pipefail
dir=$1 out=$2 n=${3:-5}
bin=${BIN:-bin}
mkdir -p "$out"
size=$(du -sb "$dir" | cut -f1)
now() { date +%s.%N; }
copy_t=() conv_t=() rss=0
for i in $(seq "$n"); do
  rm -rf "$out/copy" "$out/bench.fhm"; sync
  t0=$(now); cp -r "$dir" "$out/copy"; sync; t1=$(now)
  copy_t+=("$(echo "$t1 - $t0" | bc)")
  rm -rf "$out/copy"; sync
  t0=$(now)
  r=$( { /usr/bin/env bash -c 'exec "$0" --in "$1" --out "$2" -q >/dev/null; ' "$bin/fh-convert" "$dir" "$out/bench.fhm"; } 2>&1 ) || { echo "$r"; exit 1; }
  t1=$(now)
  conv_t+=("$(echo "$t1 - $t0" | bc)")
done
# Peak RSS of one more conversion, from the kernel's accounting.
rm -f "$out/bench.fhm"; sync
rss=$(python3 - "$bin/fh-convert" "$dir" "$out/bench.fhm" <<'PY'
import resource, subprocess, sys
subprocess.run([sys.argv[1], "--in", sys.argv[2], "--out", sys.argv[3], "-q"], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
PY
)
rm -f "$out/bench.fhm"
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mc=$(median "${copy_t[@]}") mv=$(median "${conv_t[@]}")
echo "checkpoint: $dir ($size bytes)"
echo "copy (cp -r + sync), median of $n:    ${mc} s   runs: ${copy_t[*]}"
echo "fh-convert (incl. fsync), median of $n: ${mv} s   runs: ${conv_t[*]}"
echo "time ratio convert/copy: $(echo "scale=2; $mv / $mc" | bc)"
echo "peak RSS: $rss bytes = $(echo "scale=2; 100 * $rss / $size" | bc)% of the checkpoint"
