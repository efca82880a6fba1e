// Command benchecho is the Go gotalk package as the benchmark's comparison server: one
// buffer operation, `echo`, that answers with its payload, and no limits, over TCP or over
// WebSocket at /gotalk/. gotalk-bench builds it inside a copy of the original gotalk module
// (so it depends on nothing but that module and its vendored golang.org/x/net/websocket) and
// loads it with the same client as its own servers.
//
//	benchecho tcp|ws
//
// It listens on 127.0.0.1 at a port the system picks, prints that address on a line of its
// own, and serves until its stdin closes (the benchmark that started it has gone).
package main

import (
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"net/http"
	"os"

	"github.com/rsms/gotalk"
)

func main() {
	if len(os.Args) != 2 || (os.Args[1] != "tcp" && os.Args[1] != "ws") {
		fmt.Fprintln(os.Stderr, "usage: benchecho tcp|ws")
		os.Exit(2)
	}
	handlers := &gotalk.Handlers{}
	handlers.HandleBufferRequest("echo", func(_ *gotalk.Sock, _ string, in []byte) ([]byte, error) {
		return in, nil
	})
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		io.Copy(ioutil.Discard, os.Stdin)
		os.Exit(0)
	}()
	fmt.Println(listener.Addr())
	if os.Args[1] == "tcp" {
		server := gotalk.NewServer(handlers, gotalk.NoLimits, listener)
		fmt.Fprintln(os.Stderr, server.Accept())
		os.Exit(1)
	}
	ws := gotalk.NewWebSocketServer()
	ws.Handlers = handlers
	ws.Limits = gotalk.NoLimits
	mux := http.NewServeMux()
	mux.Handle("/gotalk/", ws)
	fmt.Fprintln(os.Stderr, http.Serve(listener, mux))
	os.Exit(1)
}
