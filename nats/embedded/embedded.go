// Package embedded starts an in-process nats-server with JetStream, for
// tests, examples and single-machine use of fanoutnats.
//
// It lives in its own package so that programs which only connect to an
// existing cluster do not link the server (and its dependencies) at all:
// import it only where an embedded server is wanted.
package embedded

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is a running embedded nats-server. Close it when done.
type Server struct {
	srv *server.Server
}

// Option adjusts the server's options before it starts.
type Option func(*server.Options)

// WithMaxPayload sets the largest message the server accepts, in bytes
// (the server's default is 1 MiB).
func WithMaxPayload(n int32) Option {
	return func(o *server.Options) { o.MaxPayload = n }
}

// WithUserPassword requires clients to log in as user with password.
func WithUserPassword(user, password string) Option {
	return func(o *server.Options) { o.Username, o.Password = user, password }
}

// WithPort listens on port instead of a random free one.
func WithPort(port int) Option {
	return func(o *server.Options) { o.Port = port }
}

// Start starts a nats-server with JetStream enabled, listening on
// 127.0.0.1 at a random free port, storing streams under dir. It returns
// once the server accepts connections.
func Start(dir string, opts ...Option) (*Server, error) {
	o := &server.Options{
		ServerName: "fanout-embedded",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		StoreDir:   dir,
		NoLog:      true,
		NoSigs:     true,
	}
	for _, opt := range opts {
		opt(o)
	}
	srv, err := server.NewServer(o)
	if err != nil {
		return nil, fmt.Errorf("embedded: new server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, errors.New("embedded: server not ready for connections within 10s")
	}
	return &Server{srv: srv}, nil
}

// URL returns the client URL, such as nats://127.0.0.1:41234.
func (s *Server) URL() string { return s.srv.ClientURL() }

// Server returns the underlying nats-server, for tests that need to look
// inside it.
func (s *Server) Server() *server.Server { return s.srv }

// Close shuts the server down and waits until it has stopped.
func (s *Server) Close() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}
