package httpcheck

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/vigil-dev/vigil/events"
)

// scanBufSize is the size of the buffers scanBody reads into.
const scanBufSize = 32 << 10

// scanBufs holds scanBody's buffers between checks: a keyword check reads
// into one of them instead of allocating its own.
var scanBufs = sync.Pool{New: func() any {
	b := make([]byte, scanBufSize)
	return &b
}}

// scanBody reads at most limit bytes of body and searches them for the
// required and forbidden keywords: case-sensitive substrings of the prefix
// read, wherever the reads happened to split it. Empty keywords are ignored.
//
// It stops early once a forbidden keyword is seen, or once every required
// keyword is seen and there are no forbidden ones. A body longer than limit
// is not an error: only its first limit bytes are searched. A read error
// before the end (or the limit) is returned as err, with no class.
//
// It keeps no more of the body than a buffer of scanBufSize bytes (more only
// for a keyword longer than half of it): after each read, only the bytes a
// match ending in the next read could start in, the last len(kw)-1, are
// kept for the next search.
func scanBody(body io.Reader, limit int64, required, forbidden []string) (cls events.Class, msg string, err error) {
	req := nonEmpty(required)
	forb := nonEmpty(forbidden)
	reqFound := make([]bool, len(req))
	missing := len(req)

	keep := 0 // bytes kept from one search to the next
	for _, kw := range req {
		keep = max(keep, len(kw)-1)
	}
	for _, kw := range forb {
		keep = max(keep, len(kw)-1)
	}
	var buf []byte
	if keep <= scanBufSize/2 {
		bp := scanBufs.Get().(*[]byte)
		defer scanBufs.Put(bp)
		buf = *bp
	} else {
		buf = make([]byte, 2*keep)
	}

	var read int64 // bytes of the body read
	kept := 0      // bytes of buf kept from the last search
	for read < limit {
		room := min(int64(len(buf)-kept), limit-read)
		n, rerr := body.Read(buf[kept : kept+int(room)])
		read += int64(n)
		if n > 0 {
			win := buf[:kept+n]
			for _, kw := range forb {
				if bytes.Contains(win[searchFrom(kept, kw):], []byte(kw)) {
					return events.ClassKeywordForbidden, fmt.Sprintf("forbidden keyword %q present", kw), nil
				}
			}
			for i, kw := range req {
				if !reqFound[i] && bytes.Contains(win[searchFrom(kept, kw):], []byte(kw)) {
					reqFound[i] = true
					missing--
				}
			}
			if missing == 0 && len(forb) == 0 {
				return events.ClassOK, "", nil
			}
			kept = min(len(win), keep)
			copy(buf, win[len(win)-kept:])
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return "", "", rerr
		}
	}
	for i, kw := range req {
		if !reqFound[i] {
			return events.ClassKeywordMissing, fmt.Sprintf("keyword %q missing from the first %d bytes", kw, read), nil
		}
	}
	return events.ClassOK, "", nil
}

// searchFrom is where to look for kw after bytes from old on were added: a
// match must end in the new bytes, so it starts at most len(kw)-1 before.
func searchFrom(old int, kw string) int {
	return max(0, old-len(kw)+1)
}

// nonEmpty returns s without its empty strings: s itself when it has none.
func nonEmpty(s []string) []string {
	if !slices.Contains(s, "") {
		return s
	}
	out := make([]string, 0, len(s))
	for _, v := range s {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}
