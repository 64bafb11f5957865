// Package debugpage serves a fanoutdebug page for the examples' -debug-addr
// flag.
package debugpage

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	fanoutdebug "github.com/gofanout/fanout/debug"
)

// Serve serves page at http://addr/debug/fanout/ until ctx ends, and
// returns a function that waits for that, so that the finished runs can
// still be read once the report is printed.
func Serve(ctx context.Context, addr string, page *fanoutdebug.Page) (wait func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/debug/fanout/", http.StripPrefix("/debug/fanout", page))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Fprintf(os.Stderr, "debug page: http://%s/debug/fanout/\n", ln.Addr())
	return func() {
		fmt.Fprintln(os.Stderr, "debug page still up: Ctrl-C to exit")
		<-ctx.Done()
		_ = srv.Close()
	}, nil
}
