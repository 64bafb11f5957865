package fanoutnats

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestKeyTokenIsOneSafeSubjectToken(t *testing.T) {
	tests := []struct {
		give string
		want string // "" means: any safe token
	}{
		{give: "plain-key_1", want: "plain-key_1"},
		{give: "a.b"},
		{give: "*"},
		{give: ">"},
		{give: "with space"},
		{give: "héllo"},
		{give: "line\nbreak"},
		{give: strings.Repeat("k", 65)},
		{give: strings.Repeat("é.", 100)},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		got := keyToken(tt.give)
		if tt.want != "" {
			assert.Equal(t, tt.want, got)
		}
		assert.NotContains(t, got, ".", tt.give)
		assert.NotContains(t, got, "*", tt.give)
		assert.NotContains(t, got, ">", tt.give)
		assert.Equal(t, -1, strings.IndexFunc(got, func(r rune) bool { return r <= ' ' || r > '~' }), got)
		assert.LessOrEqual(t, len(got), 65)
		if prev, dup := seen[got]; dup {
			t.Errorf("keys %q and %q share token %q", prev, tt.give, got)
		}
		seen[got] = tt.give
	}
}

func TestHeaderKeyRoundTrips(t *testing.T) {
	for _, give := range []string{"plain", "a.b *>", "日本語", "tab\t", "nl\n", " lead", "bad\xffutf8", ""} {
		v, quoted := headerKey(give)
		assert.NotContains(t, v, "\n")
		assert.NotContains(t, v, "\r")
		assert.Equal(t, give, keyFromHeader(v, quoted), "%q", give)
	}
}

func TestReplyAllowedOnlyOnTheTasksOwnSubject(t *testing.T) {
	a, ok := parseTaskSubject("fanout", "fanout.task.acme.score.B1.k1")
	assert.True(t, ok)
	assert.Equal(t, taskAddress{tenant: "acme", name: "score", batch: "B1", keyToken: "k1"}, a)
	tests := []struct {
		give string
		want bool
	}{
		{give: "fanout.reply.acme.C1.B1.k1", want: true},
		{give: "fanout.reply.acme.C2.B1.k1", want: true}, // any client of the tenant
		{give: "fanout.reply.globex.C1.B1.k1"},
		{give: "fanout.reply.acme.C1.B2.k1"},
		{give: "fanout.reply.acme.C1.B1.k2"},
		{give: "fanout.reply.acme.*.B1.k1"},
		{give: "fanout.reply.acme.>"},
		{give: "fanout.reply.acme.C1.B1.k1.more"},
		{give: "other.reply.acme.C1.B1.k1"},
		{give: "$JS.API.STREAM.DELETE.FANOUT"},
		{give: ""},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, replyAllowed("fanout", a, tt.give), tt.give)
	}
	for _, bad := range []string{"fanout.task.acme.score.B1", "fanout.task.acme.score.B1.k.x", "other.task.a.b.c.d"} {
		_, ok := parseTaskSubject("fanout", bad)
		assert.False(t, ok, bad)
	}
}
