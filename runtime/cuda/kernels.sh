#!/usr/bin/env bash
# kernels.sh gen   — regenerate ptx/*.ptx from kernels/*.cu (nvcc 11.8,
#                    compute_80; the output is deterministic: no paths, no
#                    dates, so it is committed and CI can diff it).
# kernels.sh check — regenerate into a temporary directory, fail if it
#                    differs from the committed PTX, then compile every
#                    module with ptxas for sm_80, sm_86, sm_89 and sm_90,
#                    print registers, shared memory and spills per kernel,
#                    and fail on any spill or on > 48 KiB of static shared
#                    memory.
# NVCC and PTXAS override the tools. Both modes fail when they are missing.
set -euo pipefail
cd "$(dirname "$0")"
NVCC=${NVCC:-nvcc}
PTXAS=${PTXAS:-ptxas}
ARCHS=(sm_80 sm_86 sm_89 sm_90)

need() {
	if ! command -v "$1" >/dev/null 2>&1; then
		echo "kernels.sh: $1 not found (scripts/install-cuda-toolkit.sh installs Debian's CUDA toolkit 11.8)" >&2
		exit 1
	fi
}

gen() {
	local out=$1
	mkdir -p "$out"
	for cu in kernels/*.cu; do
		local b
		b=$(basename "$cu" .cu)
		# Run from kernels/ with a relative name so nothing machine-specific
		# can reach the output.
		(cd kernels && "$NVCC" -ptx -arch=compute_80 -std=c++14 -o "$out/$b.ptx" "$b.cu")
	done
}

need "$NVCC"
case "${1:-}" in
gen)
	rm -f ptx/*.ptx
	gen "$PWD/ptx"
	ls -l ptx
	;;
check)
	need "$PTXAS"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	gen "$tmp"
	if ! diff -r ptx "$tmp" >"$tmp.diff" 2>&1; then
		echo "kernels.sh: committed PTX differs from kernels/*.cu (run make kernels and commit):" >&2
		head -40 "$tmp.diff" >&2
		rm -f "$tmp.diff"
		exit 1
	fi
	rm -f "$tmp.diff"
	echo "PTX regenerated identically ($(ls ptx | wc -l) modules)"
	fail=0
	printf '%-32s %-6s %5s %8s %6s %6s\n' kernel arch regs smem stack spills
	for ptx in ptx/*.ptx; do
		for arch in "${ARCHS[@]}"; do
			log=$("$PTXAS" -arch="$arch" -v -o /dev/null "$ptx" 2>&1) || { echo "$log" >&2; echo "kernels.sh: ptxas $arch $ptx failed" >&2; exit 1; }
			# ptxas -v prints, per entry: "Compiling entry function 'k'",
			# "N bytes stack frame, S bytes spill stores, L bytes spill loads",
			# "Used R registers, M bytes smem, ...".
			while IFS='|' read -r k regs smem stack st ld; do
				printf '%-32s %-6s %5s %8s %6s %6s\n' "$k" "$arch" "$regs" "$smem" "$stack" "$((st + ld))"
				if [ "$((st + ld))" -ne 0 ]; then
					echo "kernels.sh: $k spills on $arch ($st bytes stored, $ld loaded)" >&2
					fail=1
				fi
				if [ "$smem" -gt 49152 ]; then
					echo "kernels.sh: $k uses $smem bytes of static shared memory on $arch (limit 49152)" >&2
					fail=1
				fi
			done < <(echo "$log" | awk '
				/Compiling entry function/ { if (k != "") print k "|" r "|" m "|" s "|" st "|" ld; match($0, /'"'"'[^'"'"']+'"'"'/); k = substr($0, RSTART + 1, RLENGTH - 2); r = 0; m = 0; s = 0; st = 0; ld = 0 }
				/bytes stack frame/ { s = $1; st = $5; ld = $9 }
				/Used [0-9]+ registers/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^registers/) r = $i; if ($(i+1) == "bytes" && $(i+2) ~ /^smem/) m = $i } }
				END { if (k != "") print k "|" r "|" m "|" s "|" st "|" ld }')
		done
	done
	if [ "$fail" -ne 0 ]; then
		exit 1
	fi
	echo "ptxas: every kernel compiles for ${ARCHS[*]} without spills"
	;;
*)
	echo "usage: kernels.sh gen|check" >&2
	exit 2
	;;
esac
