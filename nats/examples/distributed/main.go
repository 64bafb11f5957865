// Command distributed runs the material recommender of examples/material
// on worker processes through NATS JetStream, and shows that killing a
// worker mid-run loses no key.
//
// By default it starts an embedded nats-server and launches -workers
// copies of itself as worker processes (the same binary with -worker).
// Each worker serves "analyse": one family's analysis of one part, by the
// offline table analyst of package advisor with its simulated latency.
// The coordinator fans out every sample part × the six material families
// as keyed remote tasks ("drone-arm/composite", ...), kills one worker
// with SIGKILL once a quarter of the keys are done, and still gets every
// key back. It then judges each part locally with the table judge and
// prints, per part, which worker and which delivery served each family,
// the recommendation, and the redelivery and duplicate counts.
//
//	go run .
//	go run . -part gate-hinge -workers 4
//	go run . -debug-addr 127.0.0.1:6060 -latency 2s   # and open /debug/fanout/
//	go run . -nats nats://a:4222,nats://b:4222,nats://c:4222 -replicas 3
//	go run . -worker -nats nats://a:4222 -replicas 3 -name w9   # a worker on another machine
//
// It is a module of its own, so that neither the nats module nor the
// examples module depends on the other: the nats library never pulls in
// the examples' dependencies, and the other examples never pull in the
// NATS client and server.
//
// With -debug-addr, the fanoutdebug page shows the run and, under
// "nats", the fleet as the coordinator's client hears it: the workers
// with their slots in use and counters, the batch's tasks queued and
// running, the redeliveries and the duplicate and late replies; after
// the run, until Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gofanout/fanout"
	fanoutdebug "github.com/gofanout/fanout/debug"
	"github.com/gofanout/fanout/examples/material/advisor"
	fanoutnats "github.com/gofanout/fanout/nats"
	"github.com/gofanout/fanout/nats/embedded"
)

const (
	ackWait     = time.Second // short, so a killed worker's tasks move quickly
	statusEvery = time.Second // workers' status reports, often enough to watch a short run
)

func main() {
	log.SetFlags(0)
	s, _ := parseFlags(os.Args[1:], flag.ExitOnError)
	if s.worker {
		if err := serve(s); err != nil {
			log.Fatal(err)
		}
		return
	}
	var debug *debugServer
	if s.debugAddr != "" {
		var err error
		if debug, err = serveDebug(s.debugAddr); err != nil {
			log.Fatal(err)
		}
		defer debug.close()
		s.page = debug.page
		log.Printf("debug page: %s", debug.url)
	}
	rep, err := coordinate(s)
	rep.print(os.Stdout)
	if err != nil {
		log.Fatal(err)
	}
	if debug != nil {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		log.Printf("debug page still up at %s: Ctrl-C to exit", debug.url)
		<-ctx.Done()
	}
}

// settings are what the command line asks for.
type settings struct {
	url      string
	worker   bool
	name     string
	workers  int
	part     string
	latency  time.Duration
	timeout  time.Duration
	kill     bool
	replicas int

	debugAddr string
	page      *fanoutdebug.Page // serving debugAddr, or nil
}

func parseFlags(args []string, onError flag.ErrorHandling) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("distributed", onError)
	fs.StringVar(&s.url, "nats", "", "NATS server URLs, comma-separated (default: start an embedded server)")
	fs.BoolVar(&s.worker, "worker", false, "run as a worker process")
	fs.StringVar(&s.name, "name", "", "worker name")
	fs.IntVar(&s.workers, "workers", 3, "worker processes to start (0: use workers started elsewhere)")
	fs.StringVar(&s.part, "part", "", "sample part ("+strings.Join(advisor.Samples(), ", ")+") or a JSON spec file; default: every sample")
	fs.DurationVar(&s.latency, "latency", 150*time.Millisecond, "simulated analyst latency on the workers (±50% by family)")
	fs.DurationVar(&s.timeout, "timeout", 20*time.Second, "deadline of each analysis attempt")
	fs.BoolVar(&s.kill, "kill", true, "kill one worker process mid-run")
	fs.IntVar(&s.replicas, "replicas", 1, "stream and consumer replicas (3 on a three-node cluster)")
	fs.StringVar(&s.debugAddr, "debug-addr", "", "serve a live page of the run and the fleet at http://`ADDR`/debug/fanout/, until Ctrl-C")
	err := fs.Parse(args)
	return s, err
}

// options are the fanoutnats options of the coordinator and the workers
// alike.
func (s settings) options() []fanoutnats.Option {
	return []fanoutnats.Option{fanoutnats.WithAckWait(ackWait), fanoutnats.WithReplicas(s.replicas),
		fanoutnats.WithStatusInterval(statusEvery)}
}

// workerArgs is the command line of a worker process started by this one:
// the server, its name, the analysts' latency, and every setting that
// shapes the stream and the consumer, so that whichever process creates
// them creates them alike.
func (s settings) workerArgs(url, name string) []string {
	return []string{"-worker", "-nats", url, "-name", name,
		"-latency", s.latency.String(), "-replicas", strconv.Itoa(s.replicas)}
}

// Query asks a worker for one family's analysis of one part. The whole
// spec travels, so a worker needs no copy of the part files.
type Query struct {
	Part   advisor.Part `json:"part"`
	Family string       `json:"family"`
}

// Answer is one family's analysis, with the worker and the delivery that
// made it.
type Answer struct {
	Analysis advisor.Analysis `json:"analysis"`
	Worker   string           `json:"worker"`
	Delivery int              `json:"delivery"`
}

// serve is a worker process: it analyses parts until interrupted.
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
	fanoutnats.Handle(w, "analyse", analyse(advisor.TableAnalyst{Latency: s.latency}))
	if err := nc.Publish("demo.ready", []byte(s.name)); err != nil {
		return err
	}
	return w.Serve(ctx)
}

// analyse is the worker's handler: analyst's analysis of one family for
// one part, signed with the worker and the delivery that made it.
func analyse(analyst advisor.Analyst) func(context.Context, Query) (Answer, error) {
	return func(ctx context.Context, q Query) (Answer, error) {
		a, err := analyst.Analyze(ctx, q.Part, q.Family)
		if err != nil {
			return Answer{}, err
		}
		info, _ := fanoutnats.TaskFromContext(ctx)
		return Answer{Analysis: a, Worker: info.Worker, Delivery: info.Delivery}, nil
	}
}

// partRun is one part's share of the run: its remote answers and the
// verdict the local judge drew from them.
type partRun struct {
	key     string // the part's prefix of its tasks' keys
	part    advisor.Part
	answers []fanout.Result[Answer] // one per family, in advisor.Families order
	verdict advisor.Verdict
	err     error // the judge's, when no family suits the part
}

// report is what one coordinated run did.
type report struct {
	results *fanout.Results[Answer] // nil if the run did not start
	parts   []partRun
	elapsed time.Duration
	workers int
	killed  string // the worker killed mid-run, "" if none
	stats   fanoutnats.Stats
}

// coordinate starts the server and workers if needed, runs the fan-out of
// every part × family on them, and judges each part.
func coordinate(s settings) (report, error) {
	ctx := context.Background()
	parts, err := loadParts(s.part)
	if err != nil {
		return report{}, err
	}
	url := s.url
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
	observers := []fanout.Option{}
	if s.page != nil {
		client.Fleet() // listen now, to hear the workers' first reports
		s.page.ShowFleet("nats", debugFleet(client))
		observers = append(observers, fanout.WithObserver(s.page.Observer("distributed")))
	}

	procs, err := startWorkers(nc, s, url)
	defer stopWorkers(procs)
	if err != nil {
		return report{}, err
	}

	b := client.Batch()
	var tasks []fanout.Task[Answer]
	for _, pr := range parts {
		for _, f := range advisor.Families {
			q := Query{Part: pr.part, Family: f.Name}
			tasks = append(tasks, fanoutnats.Remote[Query, Answer](b, "analyse", pr.key+"/"+f.Name, q))
		}
	}
	killer := &killer{after: max(len(tasks)/4, 1)}
	if s.kill && len(procs) > 1 {
		killer.victim = &procs[0]
	}
	start := time.Now()
	rs, err := fanout.Run(ctx, tasks, append(observers,
		fanout.WithTaskTimeout(s.timeout),
		fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2}),
		fanout.WithObserver(&fanout.Observer{TaskDone: killer.taskDone}))...)
	rep := report{results: rs, parts: parts, elapsed: time.Since(start), workers: len(procs),
		killed: killer.killed, stats: client.Stats()}
	if rs != nil {
		judge(ctx, rep.parts, rs)
	}
	return rep, err
}

// loadParts reads the part asked for, or every sample.
func loadParts(nameOrPath string) ([]partRun, error) {
	names := advisor.Samples()
	if nameOrPath != "" {
		names = []string{nameOrPath}
	}
	parts := make([]partRun, len(names))
	for i, name := range names {
		p, err := advisor.LoadPart(name)
		if err != nil {
			return nil, err
		}
		parts[i] = partRun{key: strings.ReplaceAll(p.Name, " ", "-"), part: p}
	}
	return parts, nil
}

// judge fills in each part's answers and verdict, judged here, by the
// same table judge as the in-process recommender.
func judge(ctx context.Context, parts []partRun, rs *fanout.Results[Answer]) {
	for i := range parts {
		pr := &parts[i]
		analyses := make([]fanout.Result[advisor.Analysis], len(advisor.Families))
		for j, f := range advisor.Families {
			r, _ := rs.Get(pr.key + "/" + f.Name)
			pr.answers = append(pr.answers, r)
			analyses[j] = fanout.Result[advisor.Analysis]{Key: f.Name, Index: j, Value: r.Value.Analysis,
				Err: r.Err, Attempts: r.Attempts, Elapsed: r.Elapsed}
		}
		pr.verdict, pr.err = advisor.TableJudge{}.Judge(ctx, pr.part, analyses)
	}
}

// killer SIGKILLs one worker process once enough keys are done.
type killer struct {
	victim *proc // nil: kill none
	after  int
	done   atomic.Int32
	killed string // the victim, once killed; read after the run
}

func (k *killer) taskDone(context.Context, fanout.TaskInfo) {
	if k.victim == nil || int(k.done.Add(1)) != k.after {
		return
	}
	k.killed = fmt.Sprintf("%s (pid %d)", k.victim.name, k.victim.cmd.Process.Pid)
	log.Printf("killing %s mid-run", k.killed)
	_ = k.victim.cmd.Process.Kill()
}

// print shows each part's analyses and recommendation, then the totals
// and the client's counters.
func (r report) print(out io.Writer) {
	if r.results == nil {
		return
	}
	perWorker := map[string]int{}
	for _, pr := range r.parts {
		printPart(out, pr)
		for _, a := range pr.answers {
			if a.Err == nil {
				perWorker[a.Value.Worker]++
			}
		}
	}
	st := r.stats
	fmt.Fprintf(out, "\n%d/%d keys succeeded in %v with %d worker processes", r.results.Succeeded(), r.results.Len(),
		r.elapsed.Round(time.Millisecond), r.workers)
	if r.killed != "" {
		fmt.Fprintf(out, "; killed %s mid-run", r.killed)
	}
	fmt.Fprint(out, "\nanalyses per worker:")
	for _, name := range slices.Sorted(maps.Keys(perWorker)) {
		fmt.Fprintf(out, " %s=%d", name, perWorker[name])
	}
	fmt.Fprintf(out, "\nreplies %d, from redeliveries %d, duplicates dropped %d, late %d, max-deliveries %d\n",
		st.Replies, st.Redelivered, st.Duplicates, st.Late, st.MaxDelivers)
}

// printPart shows a part as the material command does, with who served
// each family. Elapsed runs from the start of the fan-out, so it includes
// the time a task waited in the queue, or for a redelivery.
func printPart(out io.Writer, pr partRun) {
	fmt.Fprintf(out, "\n== %s: %s\n", pr.part.Name, pr.part.Description)
	for i, r := range pr.answers {
		fam := advisor.Families[i].Name
		served, outcome := fmt.Sprintf("%s #%d", r.Value.Worker, r.Value.Delivery), r.Value.Analysis.Outcome()
		if r.Err != nil {
			served, outcome = "", fmt.Sprintf("error: %v", r.Err)
		}
		fmt.Fprintf(out, "  %-9s %-13s %6s  %s\n", fam, served, r.Elapsed.Round(time.Millisecond), outcome)
	}
	if pr.err != nil {
		fmt.Fprintf(out, "  -> no recommendation: %v\n", pr.err)
		return
	}
	fmt.Fprintf(out, "  -> %s\n", pr.verdict)
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

// debugFleet maps what the client hears of the fleet into the debug
// page's Fleet. The debug module does not depend on the nats module, nor
// the nats module on it: these few lines are the whole bridge.
func debugFleet(c *fanoutnats.Client) func() fanoutdebug.Fleet {
	return func() fanoutdebug.Fleet {
		f := c.Fleet()
		d := fanoutdebug.Fleet{Sent: f.Stats.Sent, Replies: f.Stats.Replies, Redelivered: f.Stats.Redelivered,
			Duplicates: f.Stats.Duplicates, Late: f.Stats.Late}
		for _, w := range f.Workers {
			d.Workers = append(d.Workers, fanoutdebug.FleetWorker{Name: w.Name, Slots: w.Slots, InUse: w.InUse,
				Started: w.Stats.Started, Succeeded: w.Stats.Succeeded, Failed: w.Stats.Failed,
				Redelivered: w.Stats.Redelivered, Seen: w.Seen})
		}
		for _, b := range f.Batches {
			d.Batches = append(d.Batches, fanoutdebug.FleetBatch{ID: b.ID, Queued: b.Queued, Running: b.Running})
		}
		return d
	}
}

// debugServer serves a fanoutdebug page at url.
type debugServer struct {
	page *fanoutdebug.Page
	url  string // http://ADDR/debug/fanout/
	srv  *http.Server
}

// serveDebug serves a new page on addr (port 0: any free port) until
// close.
func serveDebug(addr string) (*debugServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	d := &debugServer{page: fanoutdebug.New(), url: "http://" + ln.Addr().String() + "/debug/fanout/"}
	mux := http.NewServeMux()
	mux.Handle("/debug/fanout/", http.StripPrefix("/debug/fanout", d.page))
	d.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = d.srv.Serve(ln) }()
	return d, nil
}

func (d *debugServer) close() { _ = d.srv.Close() }
