// Command loadgen drives the workloads that etcd's benchmark tool has no command for:
// compare-and-put transactions, watch fan-out, a steady writer for failover timing, and a
// bulk fill (many puts per transaction) for the memory and learner measurements.
// Each run is bounded by --duration and prints one JSON object on stdout.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

type result struct {
	Workload   string  `json:"workload"`
	Ops        int64   `json:"ops"`
	Errors     int64   `json:"errors"`
	Seconds    float64 `json:"seconds"`
	Throughput float64 `json:"throughput"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	MaxGapS    float64 `json:"max_gap_s,omitempty"`
	GapStart   float64 `json:"gap_start,omitempty"`
	GapEnd     float64 `json:"gap_end,omitempty"`
}

func main() {
	workload := flag.String("workload", "txn", "txn | watch | writer | fill")
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "comma-separated client endpoints")
	duration := flag.Duration("duration", 10*time.Second, "how long to run")
	clients := flag.Int("clients", 1, "concurrent clients (txn, writer)")
	conns := flag.Int("conns", 1, "gRPC connections shared by the clients")
	watchers := flag.Int("watchers", 1000, "watchers on one prefix (watch)")
	streams := flag.Int("streams", 10, "gRPC connections the watchers are spread over (watch)")
	putRate := flag.Int("put-rate", 0, "puts per second on the watched prefix, 0 = as fast as one client can (watch)")
	keySpace := flag.Int("key-space", 100000, "number of distinct keys")
	valSize := flag.Int("val-size", 256, "value size in bytes")
	timeout := flag.Duration("request-timeout", 2*time.Second, "timeout of one request")
	batch := flag.Int("batch", 100, "puts per transaction (fill); etcd allows 128 by default")
	flag.Parse()

	eps := strings.Split(*endpoints, ",")
	var r result
	switch *workload {
	case "txn":
		r = runTxn(eps, *duration, *clients, *conns, *keySpace, *valSize, *timeout)
	case "watch":
		r = runWatch(eps, *duration, *watchers, *streams, *putRate, *valSize)
	case "writer":
		r = runWriter(eps, *duration, *clients, *keySpace, *valSize, *timeout)
	case "fill":
		r = runFill(eps, *clients, *conns, *keySpace, *valSize, *batch, *timeout)
	default:
		fmt.Fprintln(os.Stderr, "unknown workload", *workload)
		os.Exit(2)
	}
	_ = json.NewEncoder(os.Stdout).Encode(r)
}

func dial(eps []string) *clientv3.Client {
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	return c
}

func key(i int) string { return fmt.Sprintf("%08d", i) }

func percentiles(lat []time.Duration) (float64, float64) {
	if len(lat) == 0 {
		return 0, 0
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	at := func(q float64) float64 {
		return float64(lat[int(q*float64(len(lat)-1))]) / float64(time.Millisecond)
	}
	return at(0.50), at(0.99)
}

// runTxn: each operation reads a key's mod_revision, then puts it only if the revision is
// unchanged (If(ModRevision == rev).Then(Put)), the optimistic-concurrency pattern.
func runTxn(eps []string, d time.Duration, clients, conns, keySpace, valSize int, timeout time.Duration) result {
	cs := make([]*clientv3.Client, conns)
	for i := range cs {
		cs[i] = dial(eps)
	}
	val := strings.Repeat("v", valSize)
	var ops, errs atomic.Int64
	lats := make([][]time.Duration, clients)
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := cs[w%conns]
			rng := rand.New(rand.NewSource(int64(w)))
			for time.Now().Before(deadline) {
				k := key(rng.Intn(keySpace))
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				g, err := c.Get(ctx, k, clientv3.WithSerializable())
				if err == nil {
					var rev int64
					if len(g.Kvs) > 0 {
						rev = g.Kvs[0].ModRevision
					}
					_, err = c.Txn(ctx).
						If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).
						Then(clientv3.OpPut(k, val)).
						Commit()
				}
				cancel()
				if err != nil {
					errs.Add(1)
					continue
				}
				lats[w] = append(lats[w], time.Since(t0))
				ops.Add(1)
			}
		}(w)
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	p50, p99 := percentiles(all)
	return result{Workload: "txn", Ops: ops.Load(), Errors: errs.Load(), Seconds: el,
		Throughput: float64(ops.Load()) / el, P50Ms: p50, P99Ms: p99}
}

// runWatch: watchers on one prefix spread over streams connections; one writer puts into the
// prefix. Reports events delivered per second over all watchers and the put-to-delivery
// latency of each event.
func runWatch(eps []string, d time.Duration, watchers, streams, putRate, valSize int) result {
	const prefix = "/fanout/"
	cs := make([]*clientv3.Client, streams)
	for i := range cs {
		cs[i] = dial(eps)
	}
	val := strings.Repeat("v", valSize)
	var delivered atomic.Int64
	var mu sync.Mutex
	sent := map[int64]time.Time{} // revision -> put time
	var lats []time.Duration
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ready sync.WaitGroup
	var done sync.WaitGroup
	for i := 0; i < watchers; i++ {
		ready.Add(1)
		done.Add(1)
		go func(i int) {
			defer done.Done()
			wc := cs[i%streams].Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(),
				clientv3.WithCreatedNotify())
			first := true
			for resp := range wc {
				if first {
					first = false
					ready.Done()
					continue
				}
				now := time.Now()
				delivered.Add(int64(len(resp.Events)))
				if i%50 == 0 { // sample latencies from a subset of watchers
					mu.Lock()
					for _, ev := range resp.Events {
						if t, ok := sent[ev.Kv.ModRevision]; ok {
							lats = append(lats, now.Sub(t))
						}
					}
					mu.Unlock()
				}
			}
		}(i)
	}
	ready.Wait()
	writer := dial(eps)
	start := time.Now()
	deadline := start.Add(d)
	var puts, errs int64
	var interval time.Duration
	if putRate > 0 {
		interval = time.Second / time.Duration(putRate)
	}
	for n := 0; time.Now().Before(deadline); n++ {
		t0 := time.Now()
		mu.Lock() // hold so the revision is recorded before any watcher looks it up
		r, err := writer.Put(context.Background(), fmt.Sprintf("%s%d", prefix, n%1000), val)
		if err == nil {
			sent[r.Header.Revision] = t0
			puts++
		} else {
			errs++
		}
		mu.Unlock()
		if interval > 0 {
			time.Sleep(time.Until(t0.Add(interval)))
		}
	}
	// Let delivery drain for at most a second, then count what arrived.
	want := puts * int64(watchers)
	for t := time.Now(); delivered.Load() < want && time.Since(t) < time.Second; {
		time.Sleep(10 * time.Millisecond)
	}
	el := time.Since(start).Seconds()
	got := delivered.Load()
	cancel()
	mu.Lock()
	p50, p99 := percentiles(lats)
	mu.Unlock()
	return result{Workload: "watch", Ops: got, Errors: errs + (want - got), Seconds: el,
		Throughput: float64(got) / el, P50Ms: p50, P99Ms: p99}
}

// runWriter: steady puts; records the longest gap between two successful writes, which
// under a leader kill is the failover time as a client sees it.
func runWriter(eps []string, d time.Duration, clients, keySpace, valSize int, timeout time.Duration) result {
	c := dial(eps)
	val := strings.Repeat("v", valSize)
	var mu sync.Mutex
	var last time.Time
	var maxGap time.Duration
	var gapStart, gapEnd time.Time
	var ops, errs atomic.Int64
	start := time.Now()
	last = start
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			for time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				_, err := c.Put(ctx, key(rng.Intn(keySpace)), val)
				cancel()
				if err != nil {
					errs.Add(1)
					time.Sleep(5 * time.Millisecond)
					continue
				}
				now := time.Now()
				ops.Add(1)
				mu.Lock()
				if g := now.Sub(last); g > maxGap {
					maxGap, gapStart, gapEnd = g, last, now
				}
				last = now
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	unix := func(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
	return result{Workload: "writer", Ops: ops.Load(), Errors: errs.Load(), Seconds: el,
		Throughput: float64(ops.Load()) / el, MaxGapS: maxGap.Seconds(),
		GapStart: unix(gapStart), GapEnd: unix(gapEnd)}
}

// runFill writes keys 0 .. keySpace-1 once each, batch puts per transaction, from clients
// goroutines; it stops at the first error so a short fill is never mistaken for a full one.
// Ops counts keys written.
func runFill(eps []string, clients, conns, keySpace, valSize, batch int, timeout time.Duration) result {
	cs := make([]*clientv3.Client, conns)
	for i := range cs {
		cs[i] = dial(eps)
	}
	val := strings.Repeat("v", valSize)
	var next, ops, errs atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := cs[w%conns]
			for errs.Load() == 0 {
				first := int(next.Add(int64(batch))) - batch
				if first >= keySpace {
					return
				}
				last := min(first+batch, keySpace)
				puts := make([]clientv3.Op, 0, last-first)
				for i := first; i < last; i++ {
					puts = append(puts, clientv3.OpPut(key(i), val))
				}
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				_, err := c.Txn(ctx).Then(puts...).Commit()
				cancel()
				if err != nil {
					fmt.Fprintln(os.Stderr, "fill:", err)
					errs.Add(1)
					return
				}
				ops.Add(int64(len(puts)))
			}
		}(w)
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	return result{Workload: "fill", Ops: ops.Load(), Errors: errs.Load(), Seconds: el,
		Throughput: float64(ops.Load()) / el}
}
