package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rsms/gotalk"
	"golang.org/x/net/websocket"
)

// seen is what a client's handlers were given: every name, and the notifications by name.
type seen struct {
	mu    sync.Mutex
	names map[string]struct{}
	notes chan [2]string
}

func (s *seen) record(name string) {
	s.mu.Lock()
	s.names[name] = struct{}{}
	s.mu.Unlock()
}

func (s *seen) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := make([]string, 0, len(s.names))
	for name := range s.names {
		list = append(list, name)
	}
	sort.Strings(list)
	return list
}

// next waits for the notification `name`, skipping others.
func (s *seen) next(name string) (string, error) {
	deadline := time.After(5 * time.Second)
	for {
		select {
		case note := <-s.notes:
			if note[0] == name {
				return note[1], nil
			}
		case <-deadline:
			return "", fmt.Errorf("no %q notification within 5s", name)
		}
	}
}

// clientHandlers record every name they are given. They answer `client-echo`, which the
// interop fixture's `reverse-echo` calls, and nothing else.
func clientHandlers(seen *seen) *gotalk.Handlers {
	h := &gotalk.Handlers{}
	h.HandleBufferRequest("", func(_ *gotalk.Sock, op string, in []byte) ([]byte, error) {
		seen.record(op)
		if op == "client-echo" {
			return append([]byte("client:"), in...), nil
		}
		return nil, fmt.Errorf("unknown operation %q", op)
	})
	h.HandleStreamRequest("", func(_ *gotalk.Sock, op string, _ chan []byte, _ io.WriteCloser) error {
		seen.record(op)
		return fmt.Errorf("unknown operation %q", op)
	})
	h.HandleBufferNotification("", func(_ *gotalk.Sock, name string, payload []byte) {
		seen.record(name)
		select {
		case seen.notes <- [2]string{name, string(payload)}:
		default:
		}
	})
	return h
}

// A checklist run over one transport.
type checklist struct {
	transport string
	failed    int32
}

func (c *checklist) check(name string, err error) {
	if err != nil {
		atomic.StoreInt32(&c.failed, 1)
		say("FAIL %s %s: %v", c.transport, name, err)
	} else {
		say("ok %s %s", c.transport, name)
	}
}

func expect(got, want interface{}) error {
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("got %#v, want %#v", got, want)
	}
	return nil
}

// client runs the checklist against a gotalk-rs interop fixture over TCP and WebSocket at
// once, and exits 0 when every check passed.
func client(args []string) int {
	flags := flag.NewFlagSet("client", flag.ExitOnError)
	tcpAddr := flags.String("tcp", "", "the fixture's TCP address")
	wsURL := flags.String("ws", "", "the fixture's WebSocket URL")
	origin := flags.String("origin", "", "the Origin to send over WebSocket")
	idle := flags.Duration("idle", 0, "how long to stay idle before the last checks")
	heartbeat := flags.Duration("heartbeat", 20*time.Second, "this client's heartbeat interval")
	mode := flags.String("mode", "interop", "interop: the whole checklist against the interop fixture; "+
		"names: connect, call greet, stay idle, and wait for the server to close the connection")
	flags.Parse(args)

	var wg sync.WaitGroup
	var failed int32
	run := func(transport string, dial func(*gotalk.Sock) error) {
		defer wg.Done()
		c := &checklist{transport: transport}
		seen := &seen{names: map[string]struct{}{}, notes: make(chan [2]string, 64)}
		s := gotalk.NewSock(clientHandlers(seen))
		s.HeartbeatInterval = *heartbeat
		var heartbeats int32
		s.OnHeartbeat = func(int, time.Time) { atomic.AddInt32(&heartbeats, 1) }
		closed := make(chan int, 1)
		s.CloseHandler = func(_ *gotalk.Sock, code int) { closed <- code }
		if err := dial(s); err != nil {
			c.check("connect", err)
			atomic.StoreInt32(&failed, 1)
			return
		}
		if *mode == "names" {
			names(c, s, *idle, closed)
		} else {
			interop(c, s, seen, *idle, &heartbeats, closed)
		}
		say("names %s %s", transport, strings.Join(seen.list(), " "))
		if atomic.LoadInt32(&c.failed) != 0 {
			atomic.StoreInt32(&failed, 1)
		}
	}
	limits := *gotalk.DefaultLimits
	if *tcpAddr != "" {
		wg.Add(1)
		go run("tcp", func(s *gotalk.Sock) error { return s.Connect("tcp", *tcpAddr, &limits) })
	}
	if *wsURL != "" {
		wg.Add(1)
		go run("websocket", func(s *gotalk.Sock) error {
			ws, err := websocket.Dial(*wsURL, "", *origin)
			if err != nil {
				return err
			}
			// As Go's own server does: text frames would have to be UTF-8.
			ws.PayloadType = websocket.BinaryFrame
			return s.ConnectReader(ws, &limits)
		})
	}
	wg.Wait()
	if failed != 0 {
		return 1
	}
	return 0
}

// interop is the checklist against the interop fixture.
func interop(c *checklist, s *gotalk.Sock, seen *seen, idle time.Duration, heartbeats *int32, closed chan int) {
	hello, err := seen.next("hello")
	if err == nil {
		want := fmt.Sprintf(`{"msg":"welcome","transport":%q}`, c.transport)
		err = expect(hello, want)
	}
	c.check("hello notification", err)

	out, err := s.BufferRequest("echo", []byte("bytes \x00\xff"))
	if err == nil {
		err = expect(string(out), "bytes \x00\xff")
	}
	c.check("echo", err)

	var greeting map[string]string
	err = s.Request("greet", map[string]string{"name": "Go"}, &greeting)
	if err == nil {
		err = expect(greeting, map[string]string{"greeting": "Hello Go"})
	}
	c.check("greet", err)

	value := map[string]interface{}{"a": []interface{}{1.0, "two", nil, true}, "é": "ü"}
	var echoed map[string]interface{}
	err = s.Request("echo-json", value, &echoed)
	if err == nil {
		err = expect(echoed, value)
	}
	c.check("echo-json", err)

	_, err = s.BufferRequest("fail", nil)
	c.check("fail is an ErrorResult", expectError(err, "intentional failure"))

	// A public error's code travels in the text, which Go shows as is.
	_, err = s.BufferRequest("fail-public", nil)
	c.check("fail-public reads as [code] message", expectError(err, "[not_found] no such thing"))

	// Any other error is a reference: the real text stays in the server's log.
	_, err = s.BufferRequest("fail-internal", nil)
	if err != nil && strings.HasPrefix(err.Error(), "[internal] internal error (ref ") &&
		!strings.Contains(err.Error(), "password") {
		err = nil
	} else if err == nil {
		err = fmt.Errorf("fail-internal succeeded")
	}
	c.check("fail-internal is a reference", err)
	_, err = s.BufferRequest("no-such-op", nil)
	c.check("unknown operation", expectError(err, `unknown operation "no-such-op"`))

	// Go's JSON client fails on an empty result (a known fault), so ask for bytes.
	out, err = s.BufferRequest("empty", nil)
	if err == nil {
		err = expect(len(out), 0)
	}
	c.check("empty result", err)

	var slept int
	err = s.Request("sleep", 10, &slept)
	if err == nil {
		err = expect(slept, 10)
	}
	c.check("sleep", err)

	_, err = s.BufferRequest("notify-me", []byte(`"n1"`))
	if err == nil {
		var note string
		if note, err = seen.next("notified"); err == nil {
			err = expect(note, `"n1"`)
		}
	}
	c.check("notify-me", err)

	err = s.BufferNotify("echo-note", []byte("[1,2]"))
	if err == nil {
		var note string
		if note, err = seen.next("echo-note-reply"); err == nil {
			err = expect(note, "[1,2]")
		}
	}
	c.check("echo-note", err)

	out, err = s.BufferRequest("reverse-echo", []byte("go"))
	if err == nil {
		err = expect(string(out), "client:go")
	}
	c.check("reverse-echo calls the client back", err)

	c.check("stream-echo", streamEcho(s, []string{"a", "bc", "d"}))

	if idle > 0 {
		time.Sleep(idle)
		var err error
		select {
		case code := <-closed:
			err = fmt.Errorf("closed while idle (code %d)", code)
		default:
		}
		if err == nil && atomic.LoadInt32(heartbeats) == 0 {
			err = fmt.Errorf("no heartbeat from the server in %v", idle)
		}
		if err == nil {
			var out []byte
			out, err = s.BufferRequest("echo", []byte("after idle"))
			if err == nil {
				err = expect(string(out), "after idle")
			}
		}
		c.check(fmt.Sprintf("idle %v past the 30s read timeout", idle), err)
	}

	// The fixture ends the connection gracefully, as a server shutting down does.
	_, err = s.BufferRequest("end-me", nil)
	if err == nil {
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			err = fmt.Errorf("not closed within 5s")
		}
	}
	c.check("end-me closes the connection", err)
}

// names connects, calls greet, stays idle, then waits for the server to close (the test
// stops it), so the names its handlers saw cover a whole connection.
func names(c *checklist, s *gotalk.Sock, idle time.Duration, closed chan int) {
	var greeting map[string]string
	err := s.Request("greet", map[string]string{"name": "Go"}, &greeting)
	if err == nil {
		err = expect(greeting, map[string]string{"greeting": "Hello Go"})
	}
	c.check("greet", err)
	time.Sleep(idle)
	select {
	case code := <-closed:
		c.check("idle", fmt.Errorf("closed while idle (code %d)", code))
		return
	default:
	}
	c.check("idle", nil)
	say("waiting %s", c.transport)
	select {
	case <-closed:
		c.check("closed by the server", nil)
	case <-time.After(30 * time.Second):
		c.check("closed by the server", fmt.Errorf("still open after 30s"))
	}
}

func expectError(err error, text string) error {
	if err == nil {
		return fmt.Errorf("succeeded, want the error %q", text)
	}
	return expect(err.Error(), text)
}

// streamEcho sends parts as a streaming request and expects them back.
func streamEcho(s *gotalk.Sock, parts []string) error {
	req, responses := s.StreamRequest("stream-echo")
	for _, part := range parts {
		if err := req.Write([]byte(part)); err != nil {
			return err
		}
	}
	if err := req.End(); err != nil {
		return err
	}
	var got bytes.Buffer
	deadline := time.After(5 * time.Second)
	for {
		select {
		case res := <-responses:
			if res.IsError() {
				return fmt.Errorf("error result %q", res.Data)
			}
			if len(res.Data) == 0 {
				return expect(got.String(), strings.Join(parts, ""))
			}
			got.Write(res.Data)
		case <-deadline:
			return fmt.Errorf("no end of stream within 5s (got %q)", got.String())
		}
	}
}
