#!/usr/bin/env bash
# Installs Debian's CUDA toolkit 11.8 (nvcc, ptxas) for `make kernels` and
# `make kernels-check`. Idempotent: does nothing when nvcc and ptxas are
# already on PATH. The toolkit lives in Debian's non-free component, so the
# component is added to the deb822 sources first (URIs are left untouched).
# Run as root. About 1.6 GB of downloads, 5.4 GB installed.
set -euo pipefail

if command -v nvcc >/dev/null 2>&1 && command -v ptxas >/dev/null 2>&1; then
	echo "install-cuda-toolkit: $(nvcc --version | tail -n 1) already installed"
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-cuda-toolkit: must run as root (apt-get install)" >&2
	exit 1
fi

sources=/etc/apt/sources.list.d/debian.sources
if [ -f "$sources" ]; then
	# Add contrib and non-free to every stanza whose Components line is
	# exactly "main" (the Debian and security archives); other stanzas and
	# the URIs stay as they are. Running it twice changes nothing.
	if grep -qE '^Components:[[:space:]]*main[[:space:]]*$' "$sources"; then
		sed -i -E 's/^Components:[[:space:]]*main[[:space:]]*$/Components: main contrib non-free non-free-firmware/' "$sources"
		echo "install-cuda-toolkit: added contrib non-free non-free-firmware to $sources"
	fi
elif [ -f /etc/apt/sources.list ]; then
	if ! grep -qE '^deb .* non-free( |$)' /etc/apt/sources.list; then
		sed -i -E '/^deb /{/ non-free( |$)/!s/ main( |$)/ main contrib non-free non-free-firmware\1/}' /etc/apt/sources.list
	fi
else
	echo "install-cuda-toolkit: no apt sources found (expected $sources)" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends nvidia-cuda-toolkit
nvcc --version | tail -n 1
