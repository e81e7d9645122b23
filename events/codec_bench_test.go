package events

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// The codec benchmarks measure one Marshal or one Decode of the two messages
// on the per-check path (BENCHMARKS.md finding 5): the scheduler's command and
// the checker's observation (and the summary most readers decode it into).
// Each has the fast path and, for comparison, the SDK path it replaced as
// sub-benchmarks; the data/ sub-benchmarks measure the JSON data alone, the
// fast JSON path (fastjson.go) against encoding/json.

func benchCheckCommand() *CheckCommand {
	due := time.Date(2026, 11, 23, 4, 15, 0, 0, time.UTC)
	return &CheckCommand{
		ID: CommandID("shop-eu", "eu", PurposeScheduled, due), SiteID: "shop-eu", Bucket: Bucket("shop-eu"),
		Region: "eu", Purpose: PurposeScheduled, DueAt: due, Deadline: due.Add(30 * time.Second), ConfigSeq: 4242,
		Check: CheckSpec{
			URL: "https://shop.example.com/health", Method: "GET", Timeout: Duration(10 * time.Second),
			Headers: map[string]string{"Accept": "application/json"}, ExpectStatus: []int{200, 204},
			Keywords: []string{"ok"}, Redirects: RedirectFollow, TLSVerify: true,
		},
	}
}

// benchCheckBatch is a batch of n commands like benchCheckCommand's, for
// sites shop-0, shop-1, ...
func benchCheckBatch(n int) *CheckBatch {
	b := &CheckBatch{Region: "eu"}
	for i := range n {
		c := *benchCheckCommand()
		c.SiteID = fmt.Sprintf("shop-%d", i)
		c.Bucket = Bucket(c.SiteID)
		c.DueAt = c.DueAt.Add(time.Duration(i) * time.Millisecond)
		c.ID = CommandID(c.SiteID, "eu", PurposeScheduled, c.DueAt)
		b.Commands = append(b.Commands, c)
	}
	b.ID = BatchID(b.Region, b.Envelope().Time, b.Commands)
	return b
}

func benchObservation() *Observation {
	o := sampleObservation()
	o.ConfigSeq = 4242
	o.TLS = &TLSInfo{
		Version: "TLS 1.3", Issuer: "CN=R11,O=Let's Encrypt,C=US", Subject: "CN=shop.example.com",
		NotBefore: o.StartedAt.Add(-30 * 24 * time.Hour), NotAfter: o.StartedAt.Add(60 * 24 * time.Hour), ChainValid: true,
	}
	return o
}

func benchMarshal(b *testing.B, m Message, marshal func(Message) (*nats.Msg, error)) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := marshal(m); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDecode[T any, PT interface {
	*T
	Message
}](b *testing.B, m Message, decode func(nats.Header, []byte, Message) error) {
	msg, err := marshalSDK(m)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		var v T
		if err := decode(msg.Header, msg.Data, PT(&v)); err != nil {
			b.Fatal(err)
		}
	}
}

func fastDecode(h nats.Header, data []byte, v Message) error {
	_, err := Decode(h, data, v)
	return err
}

func sdkDecode(h nats.Header, data []byte, v Message) error {
	_, err := decodeSDK(h, data, v)
	return err
}

// benchMarshalData measures encoding m's JSON data alone.
func benchMarshalData(b *testing.B, m Message, marshal func(Message) ([]byte, error)) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := marshal(m); err != nil {
			b.Fatal(err)
		}
	}
}

func fastMarshalData(m Message) ([]byte, error) {
	data, ok := marshalJSONFast(m)
	if !ok {
		return nil, fmt.Errorf("fast path declined %T", m)
	}
	return data, nil
}

func jsonMarshalData(m Message) ([]byte, error) { return json.Marshal(m) }

// benchDecodeData measures decoding m's JSON data alone into a new T.
func benchDecodeData[T any, PT interface {
	*T
	Message
}](b *testing.B, m Message, decode func([]byte, Message) error) {
	data, err := json.Marshal(m)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		var v T
		if err := decode(data, PT(&v)); err != nil {
			b.Fatal(err)
		}
	}
}

func fastDecodeData(data []byte, v Message) error {
	if !decodeFast(data, v) {
		return fmt.Errorf("fast path declined %T", v)
	}
	return nil
}

func jsonDecodeData(data []byte, v Message) error { return json.Unmarshal(data, v) }

func BenchmarkMarshalObservation(b *testing.B) {
	b.Run("fast", func(b *testing.B) { benchMarshal(b, benchObservation(), Marshal) })
	b.Run("sdk", func(b *testing.B) { benchMarshal(b, benchObservation(), marshalSDK) })
	b.Run("data/fast", func(b *testing.B) { benchMarshalData(b, benchObservation(), fastMarshalData) })
	b.Run("data/json", func(b *testing.B) { benchMarshalData(b, benchObservation(), jsonMarshalData) })
}

func BenchmarkDecodeObservation(b *testing.B) {
	b.Run("fast", func(b *testing.B) { benchDecode[Observation](b, benchObservation(), fastDecode) })
	b.Run("sdk", func(b *testing.B) { benchDecode[Observation](b, benchObservation(), sdkDecode) })
	b.Run("data/fast", func(b *testing.B) { benchDecodeData[Observation](b, benchObservation(), fastDecodeData) })
	b.Run("data/json", func(b *testing.B) { benchDecodeData[Observation](b, benchObservation(), jsonDecodeData) })
}

// BenchmarkDecodeObservationSummary decodes an observation's message into the
// summary, as the state machine and the freshness projection read every
// observation.
func BenchmarkDecodeObservationSummary(b *testing.B) {
	b.Run("fast", func(b *testing.B) { benchDecode[ObservationSummary](b, benchObservation(), fastDecode) })
	b.Run("sdk", func(b *testing.B) { benchDecode[ObservationSummary](b, benchObservation(), sdkDecode) })
	b.Run("data/fast", func(b *testing.B) { benchDecodeData[ObservationSummary](b, benchObservation(), fastDecodeData) })
	b.Run("data/json", func(b *testing.B) { benchDecodeData[ObservationSummary](b, benchObservation(), jsonDecodeData) })
}

func BenchmarkMarshalCheckCommand(b *testing.B) {
	b.Run("fast", func(b *testing.B) { benchMarshal(b, benchCheckCommand(), Marshal) })
	b.Run("sdk", func(b *testing.B) { benchMarshal(b, benchCheckCommand(), marshalSDK) })
	b.Run("data/fast", func(b *testing.B) { benchMarshalData(b, benchCheckCommand(), fastMarshalData) })
	b.Run("data/json", func(b *testing.B) { benchMarshalData(b, benchCheckCommand(), jsonMarshalData) })
}

func BenchmarkDecodeCheckCommand(b *testing.B) {
	b.Run("fast", func(b *testing.B) { benchDecode[CheckCommand](b, benchCheckCommand(), fastDecode) })
	b.Run("sdk", func(b *testing.B) { benchDecode[CheckCommand](b, benchCheckCommand(), sdkDecode) })
	b.Run("data/fast", func(b *testing.B) { benchDecodeData[CheckCommand](b, benchCheckCommand(), fastDecodeData) })
	b.Run("data/json", func(b *testing.B) { benchDecodeData[CheckCommand](b, benchCheckCommand(), jsonDecodeData) })
}
