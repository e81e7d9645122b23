package events

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// The codec benchmarks measure one Marshal or one Decode of the two messages
// on the per-check path (BENCHMARKS.md finding 5): the scheduler's command and
// the checker's observation. Each has the fast path and, for comparison, the
// SDK path it replaced as sub-benchmarks.

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

func BenchmarkMarshalObservation(b *testing.B) {
	b.Run("fast", func(b *testing.B) { benchMarshal(b, benchObservation(), Marshal) })
	b.Run("sdk", func(b *testing.B) { benchMarshal(b, benchObservation(), marshalSDK) })
}

func BenchmarkDecodeObservation(b *testing.B) {
	b.Run("fast", func(b *testing.B) { benchDecode[Observation](b, benchObservation(), fastDecode) })
	b.Run("sdk", func(b *testing.B) { benchDecode[Observation](b, benchObservation(), sdkDecode) })
}

func BenchmarkMarshalCheckCommand(b *testing.B) {
	b.Run("fast", func(b *testing.B) { benchMarshal(b, benchCheckCommand(), Marshal) })
	b.Run("sdk", func(b *testing.B) { benchMarshal(b, benchCheckCommand(), marshalSDK) })
}

func BenchmarkDecodeCheckCommand(b *testing.B) {
	b.Run("fast", func(b *testing.B) { benchDecode[CheckCommand](b, benchCheckCommand(), fastDecode) })
	b.Run("sdk", func(b *testing.B) { benchDecode[CheckCommand](b, benchCheckCommand(), sdkDecode) })
}
