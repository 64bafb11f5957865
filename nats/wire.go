package fanoutnats

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Headers carried by task and reply messages.
const (
	hdrTask     = "Fanout-Task"     // attempt id, unique per message sent
	hdrBatch    = "Fanout-Batch"    // batch id, for run-wide cancels
	hdrKey      = "Fanout-Key"      // the raw key, or its quoted form
	hdrKeyQuote = "Fanout-Key-Enc"  // "quoted" when hdrKey is strconv.Quote'd
	hdrName     = "Fanout-Name"     // handler name
	hdrReply    = "Fanout-Reply"    // the client's reply subject
	hdrDeadline = "Fanout-Deadline" // Unix nanoseconds; absent: none
	hdrStatus   = "Fanout-Status"   // reply: "ok" or "error"
	hdrWorker   = "Fanout-Worker"   // reply: the worker's name
	hdrDeliver  = "Fanout-Delivery" // reply: JetStream delivery count
)

func taskSubject(prefix, name, batch, key string) string {
	return prefix + ".task." + name + "." + batch + "." + keyToken(key)
}

func batchFilter(prefix, batch string) string { return prefix + ".task.*." + batch + ".>" }

func cancelSubject(prefix, batch, task string) string {
	if task == "" {
		return prefix + ".cancel." + batch
	}
	return prefix + ".cancel." + batch + "." + task
}

// keyToken turns a key into one subject token. Plain keys are kept as they
// are so that subjects stay readable; others (dots, wildcards, spaces,
// non-ASCII, ...) are base64url-encoded, and long ones hashed. The token is
// never decoded: the raw key travels in the Fanout-Key header.
func keyToken(key string) string {
	if validToken(key) && len(key) <= 64 {
		return key
	}
	if len(key) <= 48 {
		return "~" + base64.RawURLEncoding.EncodeToString([]byte(key))
	}
	sum := sha256.Sum256([]byte(key))
	return "#" + hex.EncodeToString(sum[:16])
}

// validToken reports whether s is a non-empty run of letters, digits, '-'
// and '_': safe as a subject token, stream or consumer name.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// headerKey returns the header value for key: the key itself when it is
// valid UTF-8 without control characters (which headers cannot carry),
// else its Go-quoted form and true.
func headerKey(key string) (string, bool) {
	if utf8.ValidString(key) && strings.IndexFunc(key, unicode.IsControl) < 0 &&
		strings.TrimSpace(key) == key {
		return key, false
	}
	return strconv.Quote(key), true
}

func keyFromHeader(v string, quoted bool) string {
	if !quoted {
		return v
	}
	if k, err := strconv.Unquote(v); err == nil {
		return k
	}
	return v
}

func formatDeadline(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }

func parseDeadline(v string) (time.Time, bool) {
	if v == "" {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}
