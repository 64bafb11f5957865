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
	hdrKey      = "Fanout-Key"      // the raw key, or its quoted form
	hdrKeyQuote = "Fanout-Key-Enc"  // "quoted" when hdrKey is strconv.Quote'd
	hdrReply    = "Fanout-Reply"    // the client's reply subject
	hdrDeadline = "Fanout-Deadline" // Unix nanoseconds; absent: none
	hdrStatus   = "Fanout-Status"   // reply: "ok" or "error"
	hdrWorker   = "Fanout-Worker"   // reply: the worker's name
	hdrDeliver  = "Fanout-Delivery" // reply: JetStream delivery count
	hdrMsgID    = "Nats-Msg-Id"     // JetStream's de-duplication id
)

// MaxKeyLen is the longest key a remote task may have, in bytes. The key
// travels in a message header, and JetStream refuses headers over 64 KiB;
// a longer key fails at once with an error matching [ErrTooLarge].
const MaxKeyLen = 4096

// Subjects, for prefix P, tenant T, client C, batch B, handler N and the
// key's subject token K (see keyToken):
//
//	P.task.T.N.B.K        a task, in the work-queue stream
//	P.reply.T.C.B.K       its reply, to client C; the replies stream
//	                      stores it as P.reply.T.B.K
//	P.cancel.T.B[.ATTEMPT] a cancel, to workers
//	P.status.W            worker W's status report, to every client: the
//	                      workers under a prefix serve every tenant
//	P.running.T.W         the tasks of tenant T's batches running on W
//
// Every subject that carries a tenant's tasks, results or batches starts
// with P.KIND.T, so subject permissions keep tenants apart.

func taskSubject(prefix, tenant, name, batch, key string) string {
	return prefix + ".task." + tenant + "." + name + "." + batch + "." + keyToken(key)
}

func batchFilter(prefix, tenant, batch string) string {
	return prefix + ".task." + tenant + ".*." + batch + ".*"
}

func replySubject(prefix, tenant, client, batch, key string) string {
	return prefix + ".reply." + tenant + "." + client + "." + batch + "." + keyToken(key)
}

// storedReplySubject is where the replies stream keeps a key's replies,
// whichever client sent the task.
func storedReplySubject(prefix, tenant, batch, key string) string {
	return prefix + ".reply." + tenant + "." + batch + "." + keyToken(key)
}

func cancelSubject(prefix, tenant, batch, task string) string {
	if task == "" {
		return prefix + ".cancel." + tenant + "." + batch
	}
	return prefix + ".cancel." + tenant + "." + batch + "." + task
}

// statusSubject is where worker id reports its status.
func statusSubject(prefix, worker string) string {
	return prefix + ".status." + worker
}

// runningSubject is where worker id reports what it runs of tenant's
// batches.
func runningSubject(prefix, tenant, worker string) string {
	return prefix + ".running." + tenant + "." + worker
}

// taskAddress is what a worker reads from a task's subject.
type taskAddress struct {
	tenant, name, batch, keyToken string
}

// parseTaskSubject splits P.task.T.N.B.K.
func parseTaskSubject(prefix, subject string) (taskAddress, bool) {
	rest, ok := strings.CutPrefix(subject, prefix+".task.")
	if !ok {
		return taskAddress{}, false
	}
	t := strings.Split(rest, ".")
	if len(t) != 4 {
		return taskAddress{}, false
	}
	return taskAddress{tenant: t[0], name: t[1], batch: t[2], keyToken: t[3]}, true
}

// replyAllowed reports whether reply, a task's reply subject, is the one
// its task's subject allows: P.reply.T.C.B.K with the task's own tenant,
// batch and key, and any client token C. A worker publishes nowhere else.
func replyAllowed(prefix string, a taskAddress, reply string) bool {
	rest, ok := strings.CutPrefix(reply, prefix+".reply."+a.tenant+".")
	if !ok {
		return false
	}
	client, rest, ok := strings.Cut(rest, ".")
	return ok && validToken(client) && rest == a.batch+"."+a.keyToken
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
