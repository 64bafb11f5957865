package fanout

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// FileJournal is the embedded [Journal]: one local file that survives a
// crash of the process or of the machine. OpenFileJournal opens or creates
// it, [WithJournal] hands it to a run, and Close releases it; a rerun that
// opens the same file after a crash returns the successes recorded before
// it without calling Do.
//
// The file is an append-only log. Each Record appends one record (a
// length, a CRC-32C checksum and the key's entry) and returns once the
// file is synced, so a recorded entry survives `kill -9` and a power
// loss. Records from concurrent tasks share one write and one fsync
// (group commit): the first to arrive writes and syncs, those that come
// while it does wait and go together in the next sync, led by one of
// them. In a run at limit 32, 12 to 16 records shared each fsync (0.25 to
// 0.6 ms on the benchmarks' VM), which cost a trivial task 67 µs and a
// 1 ms task 60 µs more than no journal, against 232 µs and 627 µs with
// an fsync per record (BENCHMARKS.md). The last record for a key wins.
//
// OpenFileJournal reads every record into an in-memory index, which
// Lookup reads; the index holds each key's last entry, values included.
// A crash can leave a record cut short or, after a power loss, garbage at
// the end of the file: reading stops at the first record that is
// incomplete or whose checksum does not match, and the file is truncated
// there before anything is appended, so a torn record is never read back
// and never hides the records appended after it. Only what Record had not
// yet returned for can be lost that way; those keys run again. (Damage in
// the middle of the file, which no crash causes, drops the records after
// it too.)
//
// Why a log and not a storage library: the journal only ever appends and
// reads everything back once, which is what a log with checksums does in
// a few hundred lines of standard library, while the core depends on
// nothing beyond x/sync, x/time and backoff. It is no storage engine:
// nothing is updated in place and the only index is a map rebuilt on
// open. A store of your own (bbolt, SQLite, a JetStream KV bucket) fits
// [Journal]'s two methods.
//
// The file is not compacted: it grows by one record each time a run ends
// a key, so a key that failed and ran again has several, and it is never
// rewritten. Delete it to start afresh. While open, the file is locked against other
// processes on Linux, the BSDs and macOS (a second OpenFileJournal fails;
// the lock ends with the process, kill -9 included); elsewhere two
// processes appending to one file corrupt it.
//
// A FileJournal is safe for concurrent use. Once a write or a sync fails,
// every later Record fails with that error (what reached the disk is
// unknown); open the file again to go on.
type FileJournal struct {
	path string
	f    *os.File

	mu       sync.Mutex
	index    map[string]Entry
	size     int64          // bytes of the file that hold whole records
	next     *journalBatch  // records waiting for the next sync, if any
	flushing bool           // some Record is writing and syncing a batch
	err      error          // sticky: the write or sync that failed
	closed   bool           // Close was called
	active   sync.WaitGroup // Records that Close must wait for
	syncs    int64          // fsyncs of records, for the benchmarks
}

// journalBatch is a group of records written with one write and synced
// with one fsync.
type journalBatch struct {
	data    []byte        // the records, framed
	keys    []string      // the keys of the records, in order
	entries []Entry       // their entries
	lead    chan struct{} // hands the batch to one of its Records to write
	done    chan struct{} // closed once the batch is synced or failed
	err     error         // set before done is closed
}

// journalMagic starts every journal file: the format's name and version.
const journalMagic = "FANOUTJ\x01"

// recordHeader is a record's length and checksum, each 4 bytes, little
// endian; the checksum (CRC-32C) covers the length and the payload.
const recordHeader = 8

// maxRecord bounds a record's payload: a key and its entry.
const maxRecord = 1 << 30

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// OpenFileJournal opens the journal at path, creating it if it does not
// exist, and reads every record into memory. A file that does not start
// as a journal is refused and left as it is. Call Close when done.
func OpenFileJournal(path string) (*FileJournal, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("fanout: journal: %w", err)
	}
	j := &FileJournal{path: path, f: f, index: map[string]Entry{}}
	if err := j.open(); err != nil {
		f.Close()
		return nil, err
	}
	return j, nil
}

// open locks the file and loads it, writing the header if it is new.
func (j *FileJournal) open() error {
	if err := lockFile(j.f); err != nil {
		return fmt.Errorf("fanout: %s: %w", j.path, err)
	}
	info, err := j.f.Stat()
	if err != nil {
		return fmt.Errorf("fanout: journal: %w", err)
	}
	head := make([]byte, min(info.Size(), int64(len(journalMagic))))
	if _, err := io.ReadFull(j.f, head); err != nil {
		return fmt.Errorf("fanout: journal: %w", err)
	}
	switch {
	case string(head) == journalMagic:
		return j.loadAndTrim(info.Size())
	case info.Size() <= int64(len(journalMagic)) &&
		(strings.HasPrefix(journalMagic, string(head)) || len(bytes.Trim(head, "\x00")) == 0):
		return j.create() // new, or its creation cut short by a crash
	default:
		return fmt.Errorf("fanout: %s is not a fanout journal", j.path)
	}
}

// loadAndTrim loads the records and cuts off whatever follows the last
// whole one.
func (j *FileJournal) loadAndTrim(fileSize int64) error {
	size, err := j.load(fileSize)
	if err != nil {
		return err
	}
	j.size = size
	if size < fileSize {
		return j.truncate(size)
	}
	return nil
}

// create writes the header of a new journal and makes the file durable,
// its name in its directory included.
func (j *FileJournal) create() error {
	if err := j.truncate(0); err != nil {
		return err
	}
	if _, err := j.f.WriteAt([]byte(journalMagic), 0); err != nil {
		return fmt.Errorf("fanout: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("fanout: %w", err)
	}
	j.size = int64(len(journalMagic))
	return syncDir(filepath.Dir(j.path))
}

func (j *FileJournal) truncate(size int64) error {
	if err := j.f.Truncate(size); err != nil {
		return fmt.Errorf("fanout: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("fanout: %w", err)
	}
	return nil
}

// syncDir makes a new file's directory entry durable. Windows cannot sync
// a directory, and makes the entry durable by itself.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fanout: journal: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fanout: journal: %w", err)
	}
	return nil
}

// load reads the records that follow the header into the index, up to
// the first that is incomplete or corrupt, and returns where it stopped.
// An error reading the file is returned: only what was read is judged.
func (j *FileJournal) load(fileSize int64) (int64, error) {
	off := int64(len(journalMagic))
	r := bufio.NewReaderSize(io.NewSectionReader(j.f, off, fileSize-off), 64<<10)
	var head [recordHeader]byte
	for {
		if _, err := io.ReadFull(r, head[:]); err != nil {
			return off, readErr(err)
		}
		n := int64(binary.LittleEndian.Uint32(head[0:4]))
		if n > fileSize-off-recordHeader {
			return off, nil // cut short
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return off, readErr(err)
		}
		sum := crc32.Update(crc32.Checksum(head[0:4], castagnoli), castagnoli, payload)
		key, e, ok := decodeRecord(payload)
		if sum != binary.LittleEndian.Uint32(head[4:8]) || !ok {
			return off, nil // torn or garbage
		}
		j.index[key] = e
		off += recordHeader + n
	}
}

// readErr is nil for the end of the file, which ends a journal wherever it
// falls, and err otherwise.
func readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil
	}
	return fmt.Errorf("fanout: journal: %w", err)
}

// Lookup returns key's last recorded entry, from memory.
func (j *FileJournal) Lookup(_ context.Context, key string) (Entry, bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return Entry{}, false, j.closedErr()
	}
	e, ok := j.index[key]
	e.Value = bytes.Clone(e.Value)
	return e, ok, nil
}

// Len returns how many keys the journal holds an entry for.
func (j *FileJournal) Len() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.index)
}

// Record appends key's entry to the file and returns once it is synced,
// with concurrent Records sharing the write and the sync. It does not give
// up when ctx ends: a record begun is finished.
func (j *FileJournal) Record(_ context.Context, key string, e Entry) error {
	rec, err := encodeRecord(key, e)
	if err != nil {
		return fmt.Errorf("fanout: %s: %w", j.path, err)
	}
	j.mu.Lock()
	if err := j.unusable(); err != nil {
		j.mu.Unlock()
		return err
	}
	j.active.Add(1)
	defer j.active.Done()
	b := j.join(rec, key, e)
	leader := !j.flushing
	j.flushing = true
	j.mu.Unlock()
	if !leader {
		select {
		case <-b.done:
			return b.err
		case <-b.lead:
		}
	}
	j.flush(b)
	return b.err
}

// join adds a record to the batch waiting for the next sync, and returns
// that batch.
func (j *FileJournal) join(rec []byte, key string, e Entry) *journalBatch {
	b := j.next
	if b == nil {
		b = &journalBatch{lead: make(chan struct{}, 1), done: make(chan struct{})}
		j.next = b
	}
	b.data = append(b.data, rec...)
	if len(e.Value) > 0 {
		e.Value = rec[len(rec)-len(e.Value):] // the record's copy, not the caller's
	}
	b.keys = append(b.keys, key)
	b.entries = append(b.entries, e)
	return b
}

// flush writes and syncs batch b, which must be j.next, and hands the
// batch that filled meanwhile, if any, to one of its Records.
func (j *FileJournal) flush(b *journalBatch) {
	j.mu.Lock()
	j.next = nil
	size, err := j.size, j.err
	j.mu.Unlock()

	if err == nil {
		_, err = j.f.WriteAt(b.data, size)
	}
	if err == nil {
		err = j.f.Sync()
	}

	j.mu.Lock()
	defer j.mu.Unlock()
	j.syncs++
	switch {
	case j.err != nil:
		b.err = j.err
	case err != nil:
		j.err = fmt.Errorf("fanout: %w", err)
		b.err = j.err
	default:
		j.size += int64(len(b.data))
		for i, key := range b.keys {
			j.index[key] = b.entries[i]
		}
	}
	close(b.done)
	if j.next != nil {
		j.next.lead <- struct{}{}
	} else {
		j.flushing = false
	}
}

// Close waits for the Records under way, then closes the file, which
// releases its lock. Lookup and Record fail after Close.
func (j *FileJournal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return j.closedErr()
	}
	j.closed = true
	j.mu.Unlock()
	j.active.Wait()
	if err := j.f.Close(); err != nil {
		return fmt.Errorf("fanout: %w", err)
	}
	return nil
}

func (j *FileJournal) unusable() error {
	if j.closed {
		return j.closedErr()
	}
	return j.err
}

func (j *FileJournal) closedErr() error {
	return fmt.Errorf("fanout: %s: %w", j.path, os.ErrClosed)
}

// A record's payload is its key, then the entry's value, error and kind,
// each as a length (uvarint) and bytes; then attempts and tokens
// (varints) and cents (a float64's bits, 8 bytes little endian).

func encodeRecord(key string, e Entry) ([]byte, error) {
	n := len(key) + len(e.Value) + len(e.Err) + len(e.Kind) + 6*binary.MaxVarintLen64 + 8
	if n > maxRecord {
		return nil, fmt.Errorf("entry for %q is %d bytes, more than a journal record holds (%d)", key, n, maxRecord)
	}
	rec := make([]byte, recordHeader, recordHeader+n)
	rec = appendString(rec, key)
	rec = appendString(rec, e.Err)
	rec = appendString(rec, e.Kind)
	rec = binary.AppendVarint(rec, int64(e.Attempts))
	rec = binary.AppendVarint(rec, e.Cost.Tokens)
	rec = binary.LittleEndian.AppendUint64(rec, math.Float64bits(e.Cost.Cents))
	rec = binary.AppendUvarint(rec, uint64(len(e.Value)))
	rec = append(rec, e.Value...) // last, so that join can point into it
	binary.LittleEndian.PutUint32(rec[0:4], uint32(len(rec)-recordHeader))
	sum := crc32.Update(crc32.Checksum(rec[0:4], castagnoli), castagnoli, rec[recordHeader:])
	binary.LittleEndian.PutUint32(rec[4:8], sum)
	return rec, nil
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// decodeRecord reads a payload that encodeRecord wrote, and reports
// whether it was whole.
func decodeRecord(p []byte) (key string, e Entry, ok bool) {
	d := decoder{p: p, ok: true}
	key = string(d.bytes())
	e.Err = string(d.bytes())
	e.Kind = string(d.bytes())
	e.Attempts = int(d.varint())
	e.Cost.Tokens = d.varint()
	e.Cost.Cents = math.Float64frombits(d.fixed64())
	if v := d.bytes(); len(v) > 0 {
		e.Value = v
	}
	return key, e, d.ok && len(d.p) == 0
}

// decoder reads a payload front to back; once a read fails, ok stays
// false.
type decoder struct {
	p  []byte
	ok bool
}

func (d *decoder) fixed64() uint64 {
	if len(d.p) < 8 {
		d.ok = false
		return 0
	}
	v := binary.LittleEndian.Uint64(d.p)
	d.p = d.p[8:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.p)
	if n <= 0 {
		d.ok = false
		return 0
	}
	d.p = d.p[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.p)
	if n <= 0 {
		d.ok = false
		return 0
	}
	d.p = d.p[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.p)) {
		d.ok = false
		return nil
	}
	b := d.p[:n:n]
	d.p = d.p[n:]
	return b
}
