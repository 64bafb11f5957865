package fanoutnats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A worker's reply goes to the subject its task allows, where the client
// subscribes, and which the replies stream captures: the worker publishes
// it to JetStream and acknowledges the task only once the reply is
// stored, so that a reply is never lost between the two.

func (w *Worker) replyMsg(msg *nats.Msg, t task, status string, data []byte) *nats.Msg {
	r := nats.NewMsg(msg.Header.Get(hdrReply))
	r.Data = data
	r.Header.Set(hdrTask, t.id)
	r.Header.Set(hdrStatus, status)
	r.Header.Set(hdrWorker, w.name)
	r.Header.Set(hdrDeliver, strconv.Itoa(t.info.Delivery))
	r.Header.Set(hdrMsgID, t.id+"."+strconv.Itoa(t.info.Delivery))
	if strings.HasPrefix(t.addr.keyToken, "#") {
		// A hashed token: the key tells a stored reply's key for sure.
		r.Header[hdrKey] = msg.Header.Values(hdrKey)
		r.Header[hdrKeyQuote] = msg.Header.Values(hdrKeyQuote)
	}
	return r
}

// okReply is a handler's result or, if it is over max_payload, an error
// reply saying so.
func (w *Worker) okReply(msg *nats.Msg, t task, out []byte) *nats.Msg {
	r := w.replyMsg(msg, t, "ok", out)
	if size, limit := msgSize(r), w.nc.MaxPayload(); size > limit {
		return w.errorReply(msg, t, wireError{Code: CodeTooLarge, Message: fmt.Sprintf(
			"fanoutnats: result of key %q makes a %d-byte reply, over the server's max_payload of %d bytes",
			t.info.Key, size, limit)})
	}
	return r
}

// errorReply is e as an error reply, cut down to fit max_payload.
func (w *Worker) errorReply(msg *nats.Msg, t task, e wireError) *nats.Msg {
	r := w.replyMsg(msg, t, "error", nil)
	r.Data = fitWireError(e, int(w.nc.MaxPayload()-msgSize(r)))
	return r
}

// replyWait bounds one attempt to store a reply. Another attempt follows,
// under the same de-duplication id.
const replyWait = 2 * time.Second

// store publishes r to the replies stream and waits until it is stored,
// trying again while ctx (Serve's) lasts: a result in hand is worth more
// than running the task again. For the same reason a publish is not cut
// short when Serve stops, and one is tried after it stopped if the
// server can be reached. A replies stream the server lost is created
// again.
func (w *Worker) store(ctx context.Context, r *nats.Msg) error {
	if ctx.Err() != nil && !w.nc.IsConnected() {
		return context.Cause(ctx)
	}
	wait := 50 * time.Millisecond
	for n := 1; ; n++ {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), replyWait)
		_, err := w.js.PublishMsg(pctx, r)
		cancel()
		if err == nil {
			return nil
		}
		w.stats.replyFailures.Add(1)
		if errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrConnectionClosed) {
			return err
		}
		if errors.Is(err, jetstream.ErrNoStreamResponse) && n%3 == 0 {
			// No leader for now, or no stream: a server lost it.
			octx, cancel := context.WithTimeout(ctx, time.Second)
			_, _ = w.open(octx)
			cancel()
		}
		if !sleepCtx(ctx, wait) {
			return err
		}
		wait = min(2*wait, time.Second)
	}
}

// fitWireError encodes e in at most room bytes if it can: it drops the
// stack first, then cuts the message (on a character boundary) and says
// how much it cut.
func fitWireError(e wireError, room int) []byte {
	data, _ := json.Marshal(e)
	if len(data) <= room {
		return data
	}
	e.Stack = ""
	if data, _ = json.Marshal(e); len(data) <= room {
		return data
	}
	full := e.Message
	cut := func(n int) []byte {
		for n > 0 && n < len(full) && !utf8.RuneStart(full[n]) {
			n--
		}
		e.Message = full[:n] + fmt.Sprintf(" [%d more bytes cut to fit max_payload]", len(full)-n)
		data, _ := json.Marshal(e)
		return data
	}
	// The longest prefix that fits: escaping makes the size grow with n,
	// not in proportion to it.
	n := sort.Search(len(full), func(n int) bool { return len(cut(n+1)) > room })
	return cut(n)
}
