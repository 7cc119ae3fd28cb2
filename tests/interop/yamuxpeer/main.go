// yamuxpeer: the HashiCorp yamux side of tests/interop/yamux_interop.c. One session, one case,
// then exit: 0 when the case went as planned, 1 with a message on stderr otherwise, 3 when it took
// longer than its deadline. Built against Debian's golang-github-hashicorp-yamux-dev (a 2019
// snapshot, GOPATH mode).
//
//	yamuxpeer server CASE        listen on 127.0.0.1, print the port, serve the one connection
//	yamuxpeer client CASE ADDR   dial ADDR (127.0.0.1:port) and run as the yamux client
//
// Bytes sent are pat(base + i) so that either side can check what it gets without a copy; the C
// side's bases are below 64 MiB, ours from goBase. The cases mirror the driver's; see there.
//
// In this yamux a stream's Close() is a FIN that also ends reading (Read returns EOF as soon as
// its buffer is empty), so a stream here reads everything it expects before it closes.
package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

const (
	mib      = 1 << 20
	goBase   = 0x80000000
	nEcho    = 50
	deadline = 60 * time.Second
)

var (
	role, name string
	sess       *yamux.Session
	logs       = &lockedWriter{w: &bytes.Buffer{}} // yamux's log, shown only when the case fails
)

func pat(i uint32) byte { return byte((i * 2654435761) >> 24) }

func fill(b []byte, base uint32) []byte {
	for i := range b {
		b[i] = pat(base + uint32(i))
	}
	return b
}

func die(format string, a ...interface{}) {
	logs.mu.Lock()
	os.Stderr.Write(logs.w.(*bytes.Buffer).Bytes())
	fmt.Fprintf(os.Stderr, "yamuxpeer %s %s: %s\n", role, name, fmt.Sprintf(format, a...))
	os.Exit(1)
}

// expect reads n bytes that must be pat(base...), then (eof) the stream's end.
func expect(st *yamux.Stream, n int, base uint32, eof bool) {
	buf := make([]byte, 256*1024)
	got := 0
	for got < n {
		want := n - got
		if want > len(buf) {
			want = len(buf)
		}
		k, err := st.Read(buf[:want])
		for i := 0; i < k; i++ {
			if buf[i] != pat(base+uint32(got+i)) {
				die("stream %d: byte %d is %d, not %d", st.StreamID(), got+i, buf[i], pat(base+uint32(got+i)))
			}
		}
		got += k
		if err != nil && got < n {
			die("stream %d: %v after %d of %d bytes", st.StreamID(), err, got, n)
		}
	}
	if eof {
		if k, err := st.Read(buf[:1]); k != 0 || err != io.EOF {
			die("stream %d: %d bytes and %v past %d, not EOF", st.StreamID(), k, err, n)
		}
	}
}

func send(st *yamux.Stream, n int, base uint32) {
	if _, err := st.Write(fill(make([]byte, n), base)); err != nil {
		die("stream %d: write: %v", st.StreamID(), err)
	}
}

func accept() *yamux.Stream {
	st, err := sess.AcceptStream()
	if err != nil {
		die("accept: %v", err)
	}
	return st
}

func open() *yamux.Stream {
	st, err := sess.OpenStream()
	if err != nil {
		die("open: %v", err)
	}
	return st
}

// waitClosed: the C side ends the session (GO_AWAY, then its close): ours must see it.
func waitClosed() {
	select {
	case <-sess.CloseChan():
	case <-time.After(deadline):
		die("the session was not closed by the C side")
	}
	if _, err := sess.OpenStream(); err == nil {
		die("a stream opened on a closed session")
	}
}

// echo: 50 streams each way at once, 1 MiB each. The C side's streams come back as they came
// (then our FIN after theirs); ours must come back byte-exact before we close them.
func caseEcho() {
	var wg sync.WaitGroup
	for k := 0; k < nEcho; k++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			st := accept()
			if _, err := io.Copy(st, st); err != nil {
				die("echo on stream %d: %v", st.StreamID(), err)
			}
			st.Close()
		}()
		go func(k int) {
			defer wg.Done()
			st := open()
			base := uint32(goBase + k*mib)
			go send(st, mib, base)
			expect(st, mib, base, false)
			st.Close()
		}(k)
	}
	wg.Wait()
	waitClosed()
}

// bulkUp: 64 MiB from the C side on one stream, then its FIN.
func caseBulkUp() {
	st := accept()
	expect(st, 64*mib, 0, true)
	st.Close()
	waitClosed()
}

// bulkDown: 64 MiB to the C side on one stream, then our FIN.
func caseBulkDown() {
	st := open()
	send(st, 64*mib, goBase)
	st.Close()
	waitClosed()
}

// halfC: the C side sends 1 MiB and its FIN; we send 4 MiB, 3 of them only after that FIN came.
func caseHalfC() {
	st := accept()
	sawFIN := make(chan struct{})
	go func() {
		expect(st, mib, 0, true)
		close(sawFIN)
	}()
	send(st, mib, goBase)
	<-sawFIN
	send(st, 3*mib, goBase+mib)
	st.Close()
	waitClosed()
}

// halfGo: we send 1 MiB and our FIN; the C side keeps sending (64 KiB before our FIN came, 128 KiB
// after), then FINs and opens a second stream as a marker: frames are handled in order, so by the
// marker's arrival its bytes wait in our buffer (within the 256 KiB window we granted).
func caseHalfGo() {
	st := open()
	send(st, mib, goBase)
	st.Close()
	marker := accept()
	expect(st, 192*1024, 0, true)
	marker.Close()
	waitClosed()
}

// closeC: the C side closes the session while a stream is open: the stream ends, so does the
// session.
func caseCloseC() {
	st := accept()
	expect(st, 1024, 0, false)
	// The C side closes as soon as this byte arrives, and yamux may then report the written byte
	// as "session shutdown": the C side checks that it came.
	st.Write(fill(make([]byte, 1), goBase))
	buf := make([]byte, 1)
	if k, err := st.Read(buf); k != 0 || err == nil {
		die("stream %d: read %d bytes, %v after the C side closed", st.StreamID(), k, err)
	}
	waitClosed()
}

// closeGo: we say go away; a stream we open after it lets the C side check that it can open none
// (NP_ECLOSED) and answer; then we close the session with no stream open.
func caseCloseGo() {
	if err := sess.GoAway(); err != nil {
		die("go away: %v", err)
	}
	st := open()
	send(st, 1, goBase)
	expect(st, 1, 0, true)
	st.Close()
	sess.Close()
}

// dropGo: we close the session without a go away while the C side's stream is open.
func caseDropGo() {
	st := accept()
	expect(st, 1024, 0, false)
	sess.Close()
}

var cases = map[string]func(){
	"echo":      caseEcho,
	"bulk_up":   caseBulkUp,
	"bulk_down": caseBulkDown,
	"half_c":    caseHalfC,
	"half_go":   caseHalfGo,
	"close_c":   caseCloseC,
	"close_go":  caseCloseGo,
	"drop_go":   caseDropGo,
}

func connect(args []string) net.Conn {
	if role == "client" {
		if len(args) != 1 {
			die("usage: yamuxpeer client CASE ADDR")
		}
		c, err := net.Dial("tcp", args[0])
		if err != nil {
			die("dial: %v", err)
		}
		return c
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		die("listen: %v", err)
	}
	fmt.Printf("%d\n", l.Addr().(*net.TCPAddr).Port)
	c, err := l.Accept()
	if err != nil {
		die("accept: %v", err)
	}
	l.Close()
	return c
}

func main() {
	if len(os.Args) < 3 || (os.Args[1] != "server" && os.Args[1] != "client") {
		fmt.Fprintln(os.Stderr, "usage: yamuxpeer server|client CASE [ADDR]")
		os.Exit(2)
	}
	role, name = os.Args[1], os.Args[2]
	run, ok := cases[name]
	if !ok {
		die("no such case")
	}
	time.AfterFunc(deadline, func() {
		fmt.Fprintf(os.Stderr, "yamuxpeer %s %s: took longer than %v\n", role, name, deadline)
		os.Exit(3)
	})
	conn := connect(os.Args[3:])
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = logs
	var err error
	if role == "client" {
		sess, err = yamux.Client(conn, cfg)
	} else {
		sess, err = yamux.Server(conn, cfg)
	}
	if err != nil {
		die("session: %v", err)
	}
	run()
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
