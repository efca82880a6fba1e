package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/rsms/gotalk"
)

// peers are the connected socks, for `broadcast`.
type peers struct {
	mu    sync.Mutex
	socks map[*gotalk.Sock]struct{}
}

func (p *peers) add(s *gotalk.Sock) {
	p.mu.Lock()
	p.socks[s] = struct{}{}
	p.mu.Unlock()
	s.CloseHandler = func(s *gotalk.Sock, _ int) {
		p.mu.Lock()
		delete(p.socks, s)
		p.mu.Unlock()
	}
}

func (p *peers) all() []*gotalk.Sock {
	p.mu.Lock()
	defer p.mu.Unlock()
	all := make([]*gotalk.Sock, 0, len(p.socks))
	for s := range p.socks {
		all = append(all, s)
	}
	return all
}

// serveHandlers answers what the interop fixture answers, and reports every name it is given.
func serveHandlers(connected *peers) *gotalk.Handlers {
	h := &gotalk.Handlers{}
	ops := map[string]gotalk.BufferReqHandler{
		"echo": func(_ *gotalk.Sock, _ string, in []byte) ([]byte, error) { return in, nil },
		"greet": func(_ *gotalk.Sock, _ string, in []byte) ([]byte, error) {
			var who struct{ Name string }
			if err := json.Unmarshal(in, &who); err != nil {
				return nil, err
			}
			return json.Marshal(map[string]string{"greeting": "Hello " + who.Name})
		},
		"fail": func(_ *gotalk.Sock, _ string, _ []byte) ([]byte, error) {
			return nil, errors.New("intentional failure")
		},
		"sleep": func(_ *gotalk.Sock, _ string, in []byte) ([]byte, error) {
			ms, err := strconv.Atoi(string(in))
			if err != nil {
				return nil, err
			}
			time.Sleep(time.Duration(ms) * time.Millisecond)
			return in, nil
		},
		"notify-me": func(s *gotalk.Sock, _ string, in []byte) ([]byte, error) {
			return nil, s.BufferNotify("notified", in)
		},
		"broadcast": func(_ *gotalk.Sock, _ string, in []byte) ([]byte, error) {
			reached := 0
			for _, s := range connected.all() {
				if s.BufferNotify("broadcast", in) == nil {
					reached++
				}
			}
			return []byte(strconv.Itoa(reached)), nil
		},
		"reverse-echo": func(s *gotalk.Sock, _ string, in []byte) ([]byte, error) {
			return s.BufferRequest("client-echo", in)
		},
	}
	h.HandleBufferRequest("", func(s *gotalk.Sock, op string, in []byte) ([]byte, error) {
		say("seen request %s", op)
		if handler, ok := ops[op]; ok {
			return handler(s, op, in)
		}
		return nil, fmt.Errorf("unknown operation %q", op)
	})
	h.HandleStreamRequest("", func(s *gotalk.Sock, op string, in chan []byte, out io.WriteCloser) error {
		say("seen stream %s", op)
		if op != "stream-echo" {
			return fmt.Errorf("unknown operation %q", op)
		}
		for part := range in {
			if part == nil {
				return nil
			}
			if _, err := out.Write(part); err != nil {
				return err
			}
		}
		return nil
	})
	h.HandleBufferNotification("", func(s *gotalk.Sock, name string, payload []byte) {
		say("seen notification %s", name)
		if name == "echo-note" {
			s.BufferNotify("echo-note-reply", payload)
		}
	})
	return h
}

// serve runs the Go server over TCP and, with -http, over WebSocket at /gotalk/.
func serve(args []string) {
	flags := flag.NewFlagSet("serve", flag.ExitOnError)
	tcpAddr := flags.String("tcp", "127.0.0.1:0", "where gotalk over TCP listens")
	httpAddr := flags.String("http", "", "where HTTP listens, with gotalk over WebSocket at /gotalk/")
	heartbeat := flags.Duration("heartbeat", 0, "heartbeat interval of accepted sockets (Go's default: none)")
	readTimeout := flags.Duration("read-timeout", gotalk.DefaultLimits.ReadTimeout, "read timeout (0: none)")
	flags.Parse(args)

	connected := &peers{socks: map[*gotalk.Sock]struct{}{}}
	handlers := serveHandlers(connected)
	limits := *gotalk.DefaultLimits
	limits.ReadTimeout = *readTimeout
	limits.StreamRequests = 32

	server, err := gotalk.Listen("tcp", *tcpAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server.Handlers = handlers
	server.Limits = &limits
	server.HeartbeatInterval = *heartbeat
	server.AcceptHandler = connected.add
	say("tcp %s", server.Addr())

	if *httpAddr != "" {
		ws := gotalk.NewWebSocketServer()
		ws.Handlers = handlers
		ws.Limits = &limits
		ws.HeartbeatInterval = *heartbeat
		ws.OnConnect = func(s *gotalk.WebSocket) { connected.add(&s.Sock) }
		listener, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		mux := http.NewServeMux()
		mux.Handle("/gotalk/", ws)
		say("http %s", listener.Addr())
		go func() {
			fmt.Fprintln(os.Stderr, http.Serve(listener, mux))
			os.Exit(1)
		}()
	}
	fmt.Fprintln(os.Stderr, server.Accept())
	os.Exit(1)
}
