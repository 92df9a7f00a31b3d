// Package conf reads tlsrelay's configuration: NGINX's configuration
// grammar (ngx_conf_file.c) restricted to what a plaintext-to-TLS stream
// proxy needs, turned into a typed, validated Config.
//
// The grammar is NGINX's: directives end in ";", blocks are "{ ... }",
// tokens may be quoted with ' or " and use the escapes \" \' \\ \t \r \n,
// "#" starts a comment, "$variables" are kept as text and "include" reads
// further files (globs allowed; a glob that matches nothing is fine, a plain
// name that matches nothing is an error). Relative include paths are taken
// from the directory of the main configuration file, as NGINX takes them
// from its configuration prefix.
//
// Contexts: the main context (worker_processes, worker_cpu_affinity,
// worker_rlimit_nofile, worker_shutdown_timeout, error_log, pid, daemon, and
// tlsrelay's own metrics_listen), an optional events block
// (worker_connections) and the stream block with its server and upstream
// blocks. Besides NGINX's proxy_ssl_* directives, stream and server blocks
// take proxy_ssl_key_log (NGINX Plus's) and tlsrelay's own proxy_ssl_watch
// and proxy_ssl_prewarm. Directives of NGINX that have nothing to do with a stream proxy
// (user, load_module, http {}, mail {}, ...) are skipped with one warning
// each. Directives of NGINX's stream modules that tlsrelay does not
// implement are refused with `"X" is not supported`; anything else is an
// unknown directive.
//
// Every directive is one row of the directive table (directiveTable, in
// table.go): its contexts, its number of arguments, its parser, its
// default, its -T form, where its position is kept, and the check it needs
// once the whole configuration is read. The parser dispatches through the
// table and -T prints through it; adding a directive is adding its row and
// its field to the Config. Tests check that every row is complete, that
// docs/configuration.md documents the same directives, and that -T of a
// configuration using all of them reads back to the same Config.
//
// Every error names the file and line, in NGINX's words:
//
//	[emerg] unknown directive "proxy_ssl_verfiy" in /etc/tlsrelay/tlsrelay.conf:14
//
// Positions are the line of the token that ends the directive (its ";" or
// "{"), as NGINX reports them. Each directive stored in the Config keeps its
// position so later stages (certificate loading, cipher strings) can report
// errors at the directive with Errorf.
//
// Load and Parse only read files; they never resolve names, bind sockets or
// build TLS contexts. Certificate, key, CA and CRL files of servers with
// proxy_ssl on are read and parsed with the standard library so broken files
// are reported with the directive that names them; decrypting keys, cipher
// strings and everything else about TLS is the engine's (engine.Check).
package conf
