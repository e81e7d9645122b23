package httpcheck

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/idna"
)

// A check's requests are sent by roundTrip, on the checking goroutine, not by
// an http.Transport. Every request has a connection of its own, used once,
// so the transport's machinery for sharing connections (a dialing goroutine,
// a read loop and a write loop per connection, the channels between them)
// did nothing for a check and cost about a fifth of its CPU. The request is
// still written and the response still read by net/http (Request.Write,
// http.ReadResponse), and http.Client still follows the redirects.

// Sizes of a connection's buffers. A check's request is a few hundred bytes;
// longer response lines are read in several pieces.
const (
	writeBufSize = 1 << 10
	readBufSize  = 2 << 10
)

// max1xx is how many informational (1xx) responses are skipped before the
// final one, as in net/http's transport.
const max1xx = 5

// errHeadersTooLarge is a response whose headers do not end within
// maxHeaderBytes.
var errHeadersTooLarge = fmt.Errorf("server response headers exceeded %d bytes; aborted", maxHeaderBytes)

// roundTrip sends req on a new connection and reads the response headers.
// The response's body reads from the connection, and closing it closes the
// connection; on error the connection is already closed. The connection's
// deadline is the check's, and canceling req's context interrupts it.
func (p *probe) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if err := validHeader(req.Header); err != nil {
		return nil, err // phaseStart: an invalid request
	}
	addr, err := dialAddress(req.URL)
	if err != nil {
		return nil, err
	}
	p.setPhase(phaseConn)
	var conn net.Conn
	if req.URL.Scheme == "https" {
		conn, err = p.dialTLS(ctx, "tcp", addr)
	} else {
		conn, err = p.connect(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	gotConn := time.Now()
	p.setPhase(phaseRequest)

	_ = conn.SetDeadline(p.deadline)
	// The deadline covers the timeout; a canceled check (shutdown) must
	// stop too, at once.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	rd := p.c.readers.Get().(*connReader)
	rd.reset(conn)
	// body owns the connection from here: closing it, on failure or when
	// the caller is done with the response, releases everything.
	body := &connBody{conn: conn, stop: stop, rd: rd, c: p.c}
	fail := func(err error) (*http.Response, error) {
		body.Close()
		return nil, err
	}

	if !req.Close {
		// "Connection: close": a redirect's request, made by http.Client,
		// does not say so itself.
		r := *req
		r.Close = true
		req = &r
	}
	bw := p.c.writers.Get().(*bufio.Writer)
	bw.Reset(conn)
	werr := req.Write(bw)
	if werr == nil {
		werr = bw.Flush()
	}
	bw.Reset(nil)
	p.c.writers.Put(bw)

	br, lim := rd.br, &rd.lim
	// A server may answer and close before the request is fully written:
	// its response, if one can be read, says more than the write error.
	if _, err := br.Peek(1); err != nil {
		if werr != nil {
			return fail(werr)
		}
		return fail(err)
	}
	p.add(&p.ttfbDur, time.Since(gotConn))

	var resp *http.Response
	for n := 0; ; n++ {
		resp, err = http.ReadResponse(br, req)
		if err != nil {
			if lim.N <= 0 {
				err = errHeadersTooLarge
			}
			return fail(err)
		}
		if resp.StatusCode < 100 || resp.StatusCode > 199 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		if n == max1xx {
			return fail(errors.New("too many 1xx informational responses"))
		}
	}
	lim.N = math.MaxInt64
	body.body = resp.Body
	resp.Body = body
	return resp, nil
}

// connReader reads a connection's responses: the limit stops a server
// sending headers forever, and is lifted for the body, which the caller
// bounds. Checkers keep them between checks (Checker.readers), as every
// check would otherwise allocate its buffer.
type connReader struct {
	lim io.LimitedReader
	br  *bufio.Reader
}

func newConnReader() any {
	rd := &connReader{}
	rd.br = bufio.NewReaderSize(&rd.lim, readBufSize)
	return rd
}

func (rd *connReader) reset(conn net.Conn) {
	rd.lim = io.LimitedReader{R: conn, N: maxHeaderBytes}
	rd.br.Reset(&rd.lim)
}

// putReader returns rd for another check; nothing may read it any more.
func (c *Checker) putReader(rd *connReader) {
	rd.lim.R = nil
	rd.br.Reset(&rd.lim)
	c.readers.Put(rd)
}

func newConnWriter() any { return bufio.NewWriterSize(nil, writeBufSize) }

// connBody is the body of a response read by roundTrip: closing it closes the
// connection, without reading what is left of the body (as net/http's own
// body would, to reuse the connection), and gives its reader back.
type connBody struct {
	body   io.ReadCloser
	conn   net.Conn
	stop   func() bool
	rd     *connReader
	c      *Checker
	closed bool
}

func (b *connBody) Read(p []byte) (int, error) {
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.body.Read(p)
}

func (b *connBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	b.stop()
	err := b.conn.Close()
	b.c.putReader(b.rd)
	b.rd = nil
	return err
}

// dialAddress is the "host:port" a request to u connects to: the port the
// URL gives or its scheme's, and an internationalized host name in its ASCII
// (punycode) form, which is what DNS and the TLS server name know it by.
func dialAddress(u *url.URL) (string, error) {
	host := u.Hostname()
	if !isASCII(host) {
		a, err := idna.Lookup.ToASCII(host)
		if err != nil {
			return "", fmt.Errorf("invalid host %q: %w", host, err)
		}
		host = a
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(host, port), nil
}

// validHeader refuses a header that would corrupt the request, as net/http's
// transport does (Request.Write only turns newlines in values into spaces).
func validHeader(h http.Header) error {
	for k, vv := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("invalid header field value for %q", k)
			}
		}
	}
	return nil
}

func isASCII(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return r >= 0x80 }) < 0
}
