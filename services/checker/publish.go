package checker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publishDurable publishes msg to stream and waits for the stream's
// acknowledgement: when it returns nil, msg is stored. It is what
// jetstream.PublishMsg with WithExpectStream does, less two costs paid on
// every check (BENCHMARKS.md, session 6): a context per publish (a request
// with a timeout instead) and the acknowledgement decoded by reflection
// (encoding/json, ~4 µs a check). The server writes a successful
// acknowledgement as {"stream":"<name>", ...}; anything else is decoded in
// full, so an error the server reports comes out as jetstream.PublishMsg
// returns it. Unlike jetstream.PublishMsg it does not retry when no stream
// answers: the caller checks the command again later.
func publishDurable(nc *nats.Conn, msg *nats.Msg, stream string, timeout time.Duration) error {
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	msg.Header[jetstream.ExpectedStreamHeader] = []string{stream}
	resp, err := nc.RequestMsg(msg, timeout)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return jetstream.ErrNoStreamResponse
		}
		return err
	}
	return checkPubAck(resp.Data, stream)
}

// checkPubAck reads a publish acknowledgement of stream.
func checkPubAck(data []byte, stream string) error {
	if bytes.HasPrefix(data, []byte(`{"stream":"`+stream+`"`)) && !bytes.Contains(data, []byte(`"error"`)) {
		return nil
	}
	var ack struct {
		Error  *jetstream.APIError `json:"error"`
		Stream string              `json:"stream"`
	}
	if err := json.Unmarshal(data, &ack); err != nil {
		return jetstream.ErrInvalidJSAck
	}
	if ack.Error != nil {
		return fmt.Errorf("nats: %w", ack.Error)
	}
	if ack.Stream != stream {
		return fmt.Errorf("%w: stored in stream %q, not %q", jetstream.ErrInvalidJSAck, ack.Stream, stream)
	}
	return nil
}
