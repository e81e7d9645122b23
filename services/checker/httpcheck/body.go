package httpcheck

import (
	"bytes"
	"fmt"
	"io"

	"github.com/vigil-dev/vigil/events"
)

// scanBody reads at most limit bytes of body and searches them for the
// required and forbidden keywords: case-sensitive substrings of the prefix
// read, wherever the reads happened to split it. Empty keywords are ignored.
//
// It stops early once a forbidden keyword is seen, or once every required
// keyword is seen and there are no forbidden ones. A body longer than limit
// is not an error: only its first limit bytes are searched. A read error
// before the end (or the limit) is returned as err, with no class.
func scanBody(body io.Reader, limit int64, required, forbidden []string) (cls events.Class, msg string, err error) {
	req := nonEmpty(required)
	forb := nonEmpty(forbidden)
	reqFound := make([]bool, len(req))
	missing := len(req)

	buf := make([]byte, 0, min(limit, 32<<10))
	for int64(len(buf)) < limit {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(limit, 2*int64(cap(buf))))
			copy(grown, buf)
			buf = grown
		}
		old := len(buf)
		n, rerr := body.Read(buf[old:cap(buf)])
		buf = buf[:old+n]
		if n > 0 {
			for _, kw := range forb {
				if bytes.Contains(buf[searchFrom(old, kw):], []byte(kw)) {
					return events.ClassKeywordForbidden, fmt.Sprintf("forbidden keyword %q present", kw), nil
				}
			}
			for i, kw := range req {
				if !reqFound[i] && bytes.Contains(buf[searchFrom(old, kw):], []byte(kw)) {
					reqFound[i] = true
					missing--
				}
			}
			if missing == 0 && len(forb) == 0 {
				return events.ClassOK, "", nil
			}
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
			return events.ClassKeywordMissing, fmt.Sprintf("keyword %q missing from the first %d bytes", kw, len(buf)), nil
		}
	}
	return events.ClassOK, "", nil
}

// searchFrom is where to look for kw after bytes from old on were added: a
// match must end in the new bytes, so it starts at most len(kw)-1 before.
func searchFrom(old int, kw string) int {
	return max(0, old-len(kw)+1)
}

func nonEmpty(s []string) []string {
	var out []string
	for _, v := range s {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}
