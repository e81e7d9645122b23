package scheduler

// dueHeap is a binary min-heap of scheduled slots keyed by due instant.
//
// Items are never removed or updated in place: rescheduling a site pushes a
// new item and bumps the site's generation, and an item whose generation no
// longer matches its target is discarded when it reaches the top (lazy
// invalidation). A tick therefore costs O(k log n) for the k slots due (plus
// the stale items it meets), never a pass over the fleet.
type dueHeap []slot

// slot is one scheduled check of a target.
type slot struct {
	due int64 // ms since the epoch
	gen uint64
	t   *target
}

func (h dueHeap) less(i, j int) bool { return h[i].due < h[j].due }

func (h *dueHeap) push(s slot) {
	*h = append(*h, s)
	h.up(len(*h) - 1)
}

// peek returns the earliest due instant; the heap must not be empty.
func (h dueHeap) peek() int64 { return h[0].due }

func (h *dueHeap) pop() slot {
	old := *h
	n := len(old) - 1
	top := old[0]
	old[0] = old[n]
	old[n] = slot{} // drop the reference for the GC
	*h = old[:n]
	if n > 0 {
		h.down(0)
	}
	return top
}

func (h dueHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (h dueHeap) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

// heapify restores the heap property over the whole slice.
func (h dueHeap) heapify() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}
