package fanoutnats

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/gofanout/fanout"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Journal is a [fanout.Journal] kept in a JetStream key-value bucket, so
// that the processes of a fleet share it: a run done in-process with
// [fanout.WithJournal] records each key's outcome there as it completes,
// and a rerun of the same run, in any process, returns the recorded
// successes without calling Do again. Record returns once the server
// has stored the entry (on every replica, with [WithReplicas]). A
// Journal is safe for concurrent use.
//
// Each run has its own name, so one bucket holds many runs; [Journal.Clear]
// drops a finished run's entries. Measured cost is in BENCHMARKS.md.
type Journal struct {
	kv     jetstream.KeyValue
	stream jetstream.Stream
	bucket string
	run    string
}

// OpenJournal opens the journal of the run named run (letters, digits,
// '-' and '_') in the key-value bucket STREAM_JOURNAL (FANOUT_JOURNAL by
// default; see [WithStream]), creating the bucket unless it exists or
// [WithBind] forbids it. [WithReplicas] and [WithMemoryStorage] apply when
// it is created.
func OpenJournal(ctx context.Context, nc *nats.Conn, run string, opts ...Option) (*Journal, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if !validToken(run) {
		return nil, fmt.Errorf("fanoutnats: OpenJournal: run %q must be letters, digits, '-' or '_'", run)
	}
	if nc == nil {
		return nil, errNilConn
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("fanoutnats: jetstream: %w", err)
	}
	bucket := cfg.stream + "_JOURNAL"
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if cfg.bind {
			return nil, fmt.Errorf("fanoutnats: WithBind: key-value bucket %q does not exist", bucket)
		}
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: bucket, Description: "fanout journals", Storage: cfg.storage, Replicas: cfg.replicas,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("fanoutnats: open key-value bucket %q: %w", bucket, err)
	}
	s, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("fanoutnats: open key-value bucket %q: %w", bucket, err)
	}
	return &Journal{kv: kv, stream: s, bucket: bucket, run: run}, nil
}

// journalRecord is what the bucket holds for a key: the key itself, since
// a long key is stored under its hash, and its entry.
type journalRecord struct {
	Key   string       `json:"key"`
	Entry fanout.Entry `json:"entry"`
}

// Lookup returns the entry recorded for key in the journal's run.
func (j *Journal) Lookup(ctx context.Context, key string) (fanout.Entry, bool, error) {
	kve, err := j.kv.Get(ctx, j.kvKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return fanout.Entry{}, false, nil
	}
	if err != nil {
		return fanout.Entry{}, false, fmt.Errorf("fanoutnats: journal %s: look up %q: %w", j.run, key, err)
	}
	var r journalRecord
	if err := json.Unmarshal(kve.Value(), &r); err != nil {
		return fanout.Entry{}, false, fmt.Errorf("fanoutnats: journal %s: decode %q: %w", j.run, key, err)
	}
	if r.Key != key {
		return fanout.Entry{}, false, nil // another key with the same hash
	}
	return r.Entry, true, nil
}

// Record stores key's entry in the journal's run, and returns once the
// server has stored it.
func (j *Journal) Record(ctx context.Context, key string, e fanout.Entry) error {
	data, err := json.Marshal(journalRecord{Key: key, Entry: e})
	if err != nil {
		return fmt.Errorf("fanoutnats: journal %s: encode %q: %w", j.run, key, err)
	}
	if _, err := j.kv.Put(ctx, j.kvKey(key), data); err != nil {
		return fmt.Errorf("fanoutnats: journal %s: record %q: %w", j.run, key, err)
	}
	return nil
}

// Clear drops every entry of the journal's run, once it is no longer
// needed.
func (j *Journal) Clear(ctx context.Context) error {
	subject := "$KV." + j.bucket + "." + j.run + ".>"
	if err := j.stream.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
		return fmt.Errorf("fanoutnats: journal %s: clear: %w", j.run, err)
	}
	return nil
}

// kvKey is key's name in the bucket: RUN.k.KEY for plain keys, else
// RUN.b.BASE64URL, or RUN.h.HASH for long ones.
func (j *Journal) kvKey(key string) string {
	switch {
	case validToken(key) && len(key) <= 64:
		return j.run + ".k." + key
	case len(key) <= 48:
		return j.run + ".b." + base64.RawURLEncoding.EncodeToString([]byte(key))
	}
	sum := sha256.Sum256([]byte(key))
	return j.run + ".h." + hex.EncodeToString(sum[:])
}
