// Command distributed scores candidate materials on worker processes
// through NATS JetStream, and shows that killing a worker mid-run loses no
// key.
//
// By default it starts an embedded nats-server, launches -workers copies of
// itself as worker processes (the same binary with -worker), runs a fan-out
// of -tasks keyed scoring tasks through them, kills one worker with SIGKILL
// once a quarter of the keys are done, and still prints a result for every
// key, with the redelivery and duplicate counts.
//
//	go run ./examples/distributed
//	go run ./examples/distributed -nats nats://a:4222,nats://b:4222,nats://c:4222 -replicas 3
//	go run ./examples/distributed -worker -nats nats://a:4222 -replicas 3 -name w9   # a worker on another machine
//
// It lives in the nats module, not in the repository's examples module, so
// that the other examples do not pull in the NATS client and server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gofanout/fanout"
	fanoutnats "github.com/gofanout/fanout/nats"
	"github.com/gofanout/fanout/nats/embedded"
	"github.com/nats-io/nats.go"
)

// Query asks for one material's score.
type Query struct {
	Formula string `json:"formula"`
}

// Score is a simulated property prediction for one material.
type Score struct {
	Formula   string  `json:"formula"`
	BandGapEV float64 `json:"band_gap_ev"`
	Stability float64 `json:"stability"`
	Score     float64 `json:"score"`
	Worker    string  `json:"worker"`
	Delivery  int     `json:"delivery"`
}

var materials = strings.Fields(`Fe2O3 TiO2 ZnO LiCoO2 LiFePO4 GaN GaAs Si3N4 Al2O3 MgO
CdTe CuInSe2 SrTiO3 BaTiO3 PbTiO3 MoS2 WS2 WSe2 NiO Co3O4 V2O5 CeO2 ZrO2 HfO2
In2O3 SnO2 Cu2O Ag2O BiVO4 LaMnO3 CsPbI3 MAPbI3 Ta3N5 BN SiC Ge LiMn2O4 NaCoO2
Mn3O4 Cr2O3 Nb2O5 Y2O3 Ga2O3 AlN`)

const ackWait = time.Second // short, so a killed worker's tasks move quickly

func main() {
	log.SetFlags(0)
	s, _ := parseFlags(os.Args[1:], flag.ExitOnError)
	if s.worker {
		if err := serve(s); err != nil {
			log.Fatal(err)
		}
		return
	}
	rep, err := coordinate(s)
	rep.print()
	if err != nil {
		log.Fatal(err)
	}
}

// settings are what the command line asks for.
type settings struct {
	url      string
	worker   bool
	name     string
	workers  int
	tasks    int
	kill     bool
	replicas int
}

func parseFlags(args []string, onError flag.ErrorHandling) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("distributed", onError)
	fs.StringVar(&s.url, "nats", "", "NATS server URLs, comma-separated (default: start an embedded server)")
	fs.BoolVar(&s.worker, "worker", false, "run as a worker process")
	fs.StringVar(&s.name, "name", "", "worker name")
	fs.IntVar(&s.workers, "workers", 3, "worker processes to start (0: use workers started elsewhere)")
	fs.IntVar(&s.tasks, "tasks", 40, "materials to score (at most 44)")
	fs.BoolVar(&s.kill, "kill", true, "kill one worker process mid-run")
	fs.IntVar(&s.replicas, "replicas", 1, "stream and consumer replicas (3 on a three-node cluster)")
	err := fs.Parse(args)
	return s, err
}

// options are the fanoutnats options of the coordinator and the workers
// alike.
func (s settings) options() []fanoutnats.Option {
	return []fanoutnats.Option{fanoutnats.WithAckWait(ackWait), fanoutnats.WithReplicas(s.replicas)}
}

// workerArgs is the command line of a worker process started by this one:
// the server, its name, and every setting that shapes the stream and the
// consumer, so that whichever process creates them creates them alike.
func (s settings) workerArgs(url, name string) []string {
	return []string{"-worker", "-nats", url, "-name", name, "-replicas", strconv.Itoa(s.replicas)}
}

// serve is a worker process: it scores materials until interrupted.
func serve(s settings) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := fanoutnats.Connect(strings.Split(s.url, ","), nats.Name(s.name))
	if err != nil {
		return err
	}
	defer nc.Close()
	w, err := fanoutnats.NewWorker(ctx, nc, append(s.options(), fanoutnats.WithName(s.name), fanoutnats.WithConcurrency(2))...)
	if err != nil {
		return err
	}
	fanoutnats.Handle(w, "score", score)
	if err := nc.Publish("demo.ready", []byte(s.name)); err != nil {
		return err
	}
	return w.Serve(ctx)
}

// score pretends to run a property model: 150–450 ms of "compute", and
// numbers that depend only on the formula.
func score(ctx context.Context, q Query) (Score, error) {
	h := fnv.New64a()
	h.Write([]byte(q.Formula))
	x := h.Sum64()
	select {
	case <-time.After(150*time.Millisecond + time.Duration(x%300)*time.Millisecond):
	case <-ctx.Done():
		return Score{}, context.Cause(ctx)
	}
	info, _ := fanoutnats.TaskFromContext(ctx)
	gap := float64(x%600) / 100
	stab := float64(x>>10%100) / 100
	return Score{
		Formula: q.Formula, BandGapEV: gap, Stability: stab,
		Score:  stab * (1 - abs(gap-1.5)/6),
		Worker: info.Worker, Delivery: info.Delivery,
	}, nil
}

func abs(f float64) float64 { return max(f, -f) }

// report is what one coordinated run did.
type report struct {
	results *fanout.Results[Score] // nil if the run did not start
	elapsed time.Duration
	workers int
	killed  string // the worker killed mid-run, "" if none
	stats   fanoutnats.Stats
}

// coordinate starts the server and workers if needed and runs the fan-out.
func coordinate(s settings) (report, error) {
	ctx := context.Background()
	url, ntasks, kill := s.url, min(s.tasks, len(materials)), s.kill
	if url == "" {
		dir, err := os.MkdirTemp("", "fanout-distributed-")
		if err != nil {
			return report{}, err
		}
		defer os.RemoveAll(dir)
		srv, err := embedded.Start(dir)
		if err != nil {
			return report{}, err
		}
		defer srv.Close()
		url = srv.URL()
		log.Printf("embedded nats-server at %s", url)
	}
	nc, err := fanoutnats.Connect(strings.Split(url, ","), nats.Name("coordinator"))
	if err != nil {
		return report{}, err
	}
	defer nc.Close()
	client, err := fanoutnats.NewClient(ctx, nc, s.options()...)
	if err != nil {
		return report{}, err
	}
	defer client.Close()

	procs, err := startWorkers(nc, s, url)
	defer stopWorkers(procs)
	if err != nil {
		return report{}, err
	}

	b := client.Batch()
	var ts []fanout.Task[Score]
	for _, m := range materials[:ntasks] {
		ts = append(ts, fanoutnats.Remote[Query, Score](b, "score", m, Query{Formula: m}))
	}
	var done atomic.Int32
	var killed string
	var once sync.Once
	observer := &fanout.Observer{TaskDone: func(context.Context, fanout.TaskInfo) {
		if kill && len(procs) > 1 && int(done.Add(1)) == ntasks/4 {
			once.Do(func() {
				p := procs[0]
				killed = fmt.Sprintf("%s (pid %d)", p.name, p.cmd.Process.Pid)
				log.Printf("killing %s mid-run", killed)
				_ = p.cmd.Process.Kill()
			})
		}
	}}
	start := time.Now()
	rs, err := fanout.Run(ctx, ts,
		fanout.WithTaskTimeout(20*time.Second),
		fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2}),
		fanout.WithObserver(observer))
	return report{results: rs, elapsed: time.Since(start), workers: len(procs), killed: killed, stats: client.Stats()}, err
}

// print shows every key's result and the client's counters.
func (r report) print() {
	if r.results == nil {
		return
	}
	printResults(r.results)
	st := r.stats
	fmt.Printf("\n%d/%d keys succeeded in %v with %d worker processes", r.results.Succeeded(), r.results.Len(),
		r.elapsed.Round(time.Millisecond), r.workers)
	if r.killed != "" {
		fmt.Printf("; killed %s mid-run", r.killed)
	}
	fmt.Printf("\nreplies %d, from redeliveries %d, duplicates dropped %d, late %d, max-deliveries %d\n",
		st.Replies, st.Redelivered, st.Duplicates, st.Late, st.MaxDelivers)
}

func printResults(rs *fanout.Results[Score]) {
	all := slices.Clone(rs.All())
	slices.SortFunc(all, func(a, b fanout.Result[Score]) int { return strings.Compare(a.Key, b.Key) })
	perWorker := map[string]int{}
	fmt.Printf("%-9s %6s %6s %6s  %-9s %s\n", "material", "gap", "stab", "score", "worker", "delivery")
	for _, r := range all {
		if r.Err != nil {
			fmt.Printf("%-9s error: %v\n", r.Key, r.Err)
			continue
		}
		v := r.Value
		perWorker[v.Worker]++
		fmt.Printf("%-9s %6.2f %6.2f %6.3f  %-9s %d\n", r.Key, v.BandGapEV, v.Stability, v.Score, v.Worker, v.Delivery)
	}
	names := make([]string, 0, len(perWorker))
	for n := range perWorker {
		names = append(names, n)
	}
	slices.Sort(names)
	fmt.Print("\nresults per worker:")
	for _, n := range names {
		fmt.Printf(" %s=%d", n, perWorker[n])
	}
	fmt.Println()
}

type proc struct {
	name string
	cmd  *exec.Cmd
}

// startWorkers re-executes this binary s.workers times as a worker of the
// server at url, and waits until each has announced itself on demo.ready.
func startWorkers(nc *nats.Conn, s settings, url string) ([]proc, error) {
	n := s.workers
	ready, err := nc.SubscribeSync("demo.ready")
	if err != nil {
		return nil, err
	}
	defer func() { _ = ready.Unsubscribe() }()
	var procs []proc
	for i := range n {
		name := fmt.Sprintf("worker-%d", i+1)
		cmd := exec.Command(os.Args[0], s.workerArgs(url, name)...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			return procs, err
		}
		procs = append(procs, proc{name, cmd})
	}
	for range n {
		if _, err := ready.NextMsg(30 * time.Second); err != nil {
			return procs, errors.New("distributed: workers did not start within 30s")
		}
	}
	log.Printf("%d worker processes ready", n)
	return procs, nil
}

// stopWorkers interrupts the workers still alive and waits for them.
func stopWorkers(procs []proc) {
	for _, p := range procs {
		_ = p.cmd.Process.Signal(os.Interrupt)
	}
	for _, p := range procs {
		_ = p.cmd.Wait()
	}
}
