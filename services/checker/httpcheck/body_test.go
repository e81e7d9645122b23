package httpcheck

import (
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/vigil-dev/vigil/events"
)

// chunkReader returns r's bytes in reads of random sizes up to max.
type chunkReader struct {
	r   io.Reader
	rnd *rand.Rand
	max int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	n := 1 + c.rnd.IntN(c.max)
	if n < len(p) {
		p = p[:n]
	}
	return c.r.Read(p)
}

// scanBody keeps only a window of the body between reads: whatever the
// reads, the keywords, their length (up to longer than the window) and the
// limit, it agrees with searching the prefix at once.
func TestScanBodyWindow(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	const alphabet = "abcdefgh"
	randString := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rnd.IntN(len(alphabet))]
		}
		return string(b)
	}
	for i := range 300 {
		size := rnd.IntN(200 << 10)
		body := randString(size)
		kwLen := 1 + rnd.IntN(12)
		if i%10 == 0 {
			kwLen = scanBufSize/2 + rnd.IntN(scanBufSize) // longer than half a buffer
		}
		var kw string
		if size > kwLen && rnd.IntN(2) == 0 {
			at := rnd.IntN(size - kwLen)
			kw = body[at : at+kwLen] // present somewhere, maybe across reads
		} else {
			kw = randString(kwLen)
		}
		limit := int64(1 + rnd.IntN(size+1))
		prefix := body[:min(int64(size), limit)]
		maxRead := []int{7, 1 << 10, 16 << 10, 64 << 10}[rnd.IntN(4)]

		var wantReq events.Class = events.ClassOK
		if !strings.Contains(prefix, kw) {
			wantReq = events.ClassKeywordMissing
		}
		cls, msg, err := scanBody(&chunkReader{strings.NewReader(body), rnd, maxRead}, limit, []string{kw}, nil)
		if err != nil || cls != wantReq {
			t.Fatalf("case %d: body %d bytes, limit %d, keyword of %d: %q %q %v, want %q", i, size, limit, len(kw), cls, msg, err, wantReq)
		}
		if cls == events.ClassKeywordMissing && !strings.Contains(msg, fmt.Sprintf("first %d bytes", len(prefix))) {
			t.Errorf("case %d: %q, want the %d bytes read", i, msg, len(prefix))
		}

		var wantForb events.Class = events.ClassOK
		if strings.Contains(prefix, kw) {
			wantForb = events.ClassKeywordForbidden
		}
		cls, msg, err = scanBody(&chunkReader{strings.NewReader(body), rnd, maxRead}, limit, nil, []string{kw})
		if err != nil || cls != wantForb {
			t.Fatalf("case %d forbidden: body %d bytes, limit %d, keyword of %d: %q %q %v, want %q", i, size, limit, len(kw), cls, msg, err, wantForb)
		}
	}
}

// A keyword check does not allocate a buffer the size of what it reads.
func TestScanBodyAllocations(t *testing.T) {
	body := strings.Repeat("x", 1<<20) + "needle"
	r := strings.NewReader(body)
	scanBody(r, 2<<20, []string{"needle"}, nil) // the pool gets a buffer
	allocs := testing.AllocsPerRun(20, func() {
		r.Reset(body)
		if cls, msg, err := scanBody(r, 2<<20, []string{"needle"}, []string{"forbidden"}); cls != events.ClassOK || err != nil {
			t.Fatalf("%q %q %v", cls, msg, err)
		}
	})
	if allocs > 2 {
		t.Errorf("%v allocations per scan of 1 MiB", allocs)
	}
}
