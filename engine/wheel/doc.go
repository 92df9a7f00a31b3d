// Package wheel is the timer wheel of an event loop: a hashed timing wheel
// whose timers are embedded in what they time (a session), counted in
// ticks whose length, and when the wheel advances, are the caller's.
//
// Concurrency: a Wheel and its Timers are not safe for concurrent use.
// Every method runs on the goroutine that owns the wheel (in the engine,
// its event loop), and a Timer's Fire runs there too, inside Advance.
package wheel
