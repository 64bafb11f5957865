package fanoutnats_test

import (
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/gofanout/fanout/nats/embedded"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"
)

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// cluster is a three-node in-process JetStream cluster.
// Routes between nodes go through proxies, one per direction, so that a
// node can be cut off as a crash would (see crash).
type cluster struct {
	t      testing.TB
	nodes  []*embedded.Server
	opts   []embedded.Option // per node, to restart it
	dirs   []string
	routes [][]*proxy // routes[i][j]: node i's route to node j
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	const n = 3
	c := &cluster{t: t}
	// A port found free can be taken, before its node listens on it, by
	// the local end of any connection on the machine; then the node never
	// gets ready. Start again on other ports.
	var err error
	for range 3 {
		if err = c.start(n); err == nil {
			break
		}
		t.Logf("cluster: %v; starting again on other ports", err)
	}
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, s := range c.nodes {
			if s != nil {
				s.Close()
			}
		}
	})
	require.Eventually(t, func() bool {
		leaders := 0
		for _, s := range c.nodes {
			if !s.Server().JetStreamIsCurrent() || s.Server().NumRoutes() != n-1 {
				return false
			}
			if s.Server().JetStreamIsLeader() {
				leaders++
				if len(s.Server().JetStreamClusterPeers()) < n {
					return false
				}
			}
		}
		return leaders == 1
	}, 30*time.Second, 20*time.Millisecond, "cluster did not form")
	return c
}

// start starts n nodes on ports found free, each routed to the others
// through proxies.
func (c *cluster) start(n int) error {
	c.opts, c.dirs = nil, nil
	cports := make([]int, n)
	for i := range n {
		cports[i] = freePort(c.t)
	}
	c.routes = make([][]*proxy, n)
	for i := range n {
		c.routes[i] = make([]*proxy, n)
		var routes []*url.URL
		for j := range n {
			if j != i {
				c.routes[i][j] = newProxy(c.t, fmt.Sprintf("127.0.0.1:%d", cports[j]))
				routes = append(routes, &url.URL{Scheme: "nats", Host: c.routes[i][j].addr()})
			}
		}
		port := freePort(c.t)
		c.dirs = append(c.dirs, c.t.TempDir())
		c.opts = append(c.opts, func(o *server.Options) {
			o.ServerName = fmt.Sprintf("n%d", i+1)
			o.Port = port
			// Nodes learn each other's routes through the proxies only.
			o.Cluster = server.ClusterOpts{Name: "fanout-test", Host: "127.0.0.1", Port: cports[i],
				Advertise: "127.0.0.1:1", PoolSize: -1}
			o.Routes = routes
		})
	}
	c.nodes = make([]*embedded.Server, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			srv, err := embedded.Start(c.dirs[i], c.opts[i])
			c.nodes[i] = srv
			errs <- err
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		for i, s := range c.nodes {
			if s != nil {
				s.Close()
				c.nodes[i] = nil
			}
		}
		return first
	}
	return nil
}

// crash takes node i away as a crash would: its routes are cut first, so
// it cannot hand its leaderships over, then it stops.
func (c *cluster) crash(i int) {
	for j := range c.nodes {
		if j != i {
			c.routes[i][j].setCut(true)
			c.routes[j][i].setCut(true)
		}
	}
	c.nodes[i].Close()
	c.nodes[i] = nil
}

// restartable is one server on a fixed port and directory, which a test
// can restart as an operator would: clients and workers reconnect to it.
type restartable struct {
	*env
	port int
	dir  string
	opts []embedded.Option
}

func newRestartable(t testing.TB, opts ...embedded.Option) *restartable {
	t.Helper()
	r := &restartable{dir: t.TempDir(), opts: opts}
	var srv *embedded.Server
	var err error
	for range 3 { // on other ports if one was taken (see newCluster)
		r.port = freePort(t)
		if srv, err = embedded.Start(r.dir, r.options()...); err == nil {
			break
		}
	}
	require.NoError(t, err)
	r.env = &env{t: t, srv: srv}
	t.Cleanup(func() { r.srv.Close() })
	return r
}

func (r *restartable) options() []embedded.Option {
	return append([]embedded.Option{embedded.WithPort(r.port)}, r.opts...)
}

// restart stops the server and starts it again on the same port and
// directory: file-storage streams survive, memory-storage ones do not.
func (r *restartable) restart() {
	r.t.Helper()
	r.srv.Close()
	srv, err := embedded.Start(r.dir, r.options()...)
	require.NoError(r.t, err)
	r.srv = srv
}
