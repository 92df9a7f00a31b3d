// Package listen holds the engine's listening sockets and their accept
// loops. Open binds a socket as a listen directive says (NGINX's options
// and messages, backlog=, reuseport copies, unix domain sockets with a
// stale file removed and mode 0666), or takes one from the caller's Func
// (a socket inherited across a binary upgrade); Update applies a reload to
// a socket that stays, Close and Drop end one. Serve is a socket's accept
// loop: a TCP client is accepted bare with accept4 and given to the
// Handler as a descriptor, a unix domain one through net. When the process
// runs out of descriptors (EMFILE, ENFILE), or would come near its limit,
// every socket of the Gate holds its clients in the backlog for a while,
// as NGINX does, instead of accepting and dropping them; other accept
// errors back off from 5 ms to 1 s.
//
// The package knows nothing of sessions, loops or gnet: what happens to an
// accepted client is the Handler's (the engine's hand-off to a loop).
//
// Concurrency: Serve runs on a goroutine of its own per socket (the
// accept goroutine), and the Handler's methods run there. Open and Update
// run on the goroutine that starts or reloads; Close, Addr, Done,
// LocalAddr and the Gate's methods are safe from any goroutine. The
// package keeps no state of its own.
package listen
