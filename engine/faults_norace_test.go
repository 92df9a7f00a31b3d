//go:build !race

package engine

// raceEnabled: the tests run under the race detector, which multiplies
// memory use; bounds on RSS allow for it.
const raceEnabled = false
