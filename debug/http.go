package fanoutdebug

import (
	"embed"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

//go:embed assets
var assets embed.FS

// ServeHTTP serves the page, its assets and its JSON, at paths relative to
// where the Page is mounted (see the package doc). It answers GET and HEAD
// only.
func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// Keys and error messages come from anywhere: the page's script writes
	// them as text, and the policy would stop a script they smuggled in.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "+
		"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "fanoutdebug: the page is read-only: "+r.Method+" is not allowed, only GET and HEAD",
			http.StatusMethodNotAllowed)
		return
	}
	switch r.URL.Path {
	case "/":
		p.asset(w, "assets/index.html", "text/html; charset=utf-8")
	case "/page.js":
		p.asset(w, "assets/page.js", "text/javascript; charset=utf-8")
	case "/page.css":
		p.asset(w, "assets/page.css", "text/css; charset=utf-8")
	case "/run":
		if _, ok := p.find(w, r, http.Error); ok {
			p.asset(w, "assets/index.html", "text/html; charset=utf-8")
		}
	case "/api":
		writeJSON(w, http.StatusOK, p.Snapshot())
	case "/api/run":
		if d, ok := p.find(w, r, jsonError); ok {
			writeJSON(w, http.StatusOK, d)
		}
	default:
		http.Error(w, fmt.Sprintf("fanoutdebug: no page %q here (if the page is mounted under a prefix, "+
			"strip it with http.StripPrefix)", r.URL.Path), http.StatusNotFound)
	}
}

// find returns the run the id parameter names, or answers 404 with fail.
func (p *Page) find(w http.ResponseWriter, r *http.Request, fail func(http.ResponseWriter, string, int)) (RunDetail, bool) {
	raw := r.URL.Query().Get("id")
	id, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		fail(w, fmt.Sprintf("fanoutdebug: bad run id %q: want the number of a run on the page", clip(raw)),
			http.StatusNotFound)
		return RunDetail{}, false
	}
	d, ok := p.Run(id)
	if !ok {
		fail(w, fmt.Sprintf("fanoutdebug: no run %d: it has not started, or finished before the last %d "+
			"finished runs the page keeps", id, p.caps.history), http.StatusNotFound)
	}
	return d, ok
}

func (p *Page) asset(w http.ResponseWriter, name, contentType string) {
	b, err := assets.ReadFile(name)
	if err != nil {
		http.Error(w, "fanoutdebug: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType)
	_, _ = w.Write(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		jsonError(w, "fanoutdebug: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func jsonError(w http.ResponseWriter, msg string, status int) {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
