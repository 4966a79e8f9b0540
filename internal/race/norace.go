//go:build !race

// Package race reports whether the binary was built with the race
// detector, which changes what allocation-counting tests can expect: it
// makes sync.Pool drop items at random.
package race

// Enabled is true in a binary built with -race.
const Enabled = false
