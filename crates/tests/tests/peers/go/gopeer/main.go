// Command gopeer is the Go gotalk package as a test peer for gotalk-rs: a server with the
// interop fixture's operations (`gopeer serve`), and a client that runs a checklist against
// a gotalk-rs server (`gopeer client`). It is built by the peer tests inside a copy of the
// original gotalk module, so it depends on nothing but that module and its vendored
// golang.org/x/net/websocket.
//
// Both modes print one line per event on stdout, which the Rust tests read:
//
//	tcp ADDR | http ADDR            where the server listens
//	seen request|stream|notification NAME
//	                                every name a handler of this peer was given
//	ok TRANSPORT CHECK | FAIL TRANSPORT CHECK: WHY
//	names TRANSPORT NAME...         the names a client's handlers saw, at its end
package main

import (
	"fmt"
	"os"
	"sync"
)

var outMu sync.Mutex

// say prints one line of the output protocol; lines from goroutines never interleave.
func say(format string, args ...interface{}) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gopeer serve|client [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "client":
		os.Exit(client(os.Args[2:]))
	default:
		fmt.Fprintf(os.Stderr, "gopeer: unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
}
