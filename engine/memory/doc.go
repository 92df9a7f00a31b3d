// Package memory keeps the process's heap close to what is live, in two
// ways: a GCPacer sets the collector's percentage after each collection
// from the live heap (the command starts one for the process), and a
// Keeper, fed the sessions accepted and open by the engine's ticker,
// collects and returns the freed pages to the kernel once a burst of
// connections has ended.
//
// Concurrency: a Keeper is used on one goroutine (the engine's ticker);
// its release runs on a goroutine of its own. A GCPacer runs on the
// runtime's cleanup goroutine after each collection; Stop is safe from
// any goroutine. Neither keeps package state.
package memory
