// Command distsync-go-peer is the reference peer for distsync's etcd interop tests:
// it runs etcd's own Go recipes (clientv3/concurrency and contrib/recipes, from the
// etcd 3.4 source Debian ships) against the same etcd as distsync, driven line by
// line by the conformance suite, so the tests can check that distsync's primitives
// and Go's interoperate on the same keys. The bench (bench/src/peers/go_mutex.rs)
// times concurrency.Mutex through it too (the bench-* commands, bench.go).
//
// Build it with `scripts/go-peer.sh build` (GOPATH mode, against
// /usr/share/gocode). Usage:
//
//	distsync-go-peer --endpoints HOST:PORT[,HOST:PORT...] [--namespace NS] [--ttl SECONDS]
//
// It prints `ready` once connected, then reads one command a line from stdin
// (space-separated tokens) and runs the commands one at a time, in order. Each
// command gets exactly one reply line on stdout: `ok`, `ok TOKEN...` or
// `err MESSAGE`. A failed command never ends the program; EOF or `quit` closes the
// session (revoking its lease) and exits 0. Diagnostics go to stderr only.
//
// Commands (names are passed to Go exactly as given):
//
//	lock NAME                     concurrency.Mutex Lock      -> ok KEY
//	unlock NAME                   its Unlock                  -> ok
//	campaign NAME VALUE           concurrency.Election        -> ok KEY CREATE_REVISION
//	proclaim NAME VALUE           -> ok
//	resign NAME                   -> ok
//	leader NAME                   -> ok VALUE, or ok - without a leader
//	observe NAME COUNT            the first COUNT values of Observe -> ok V1 V2 ...
//	rlock/runlock NAME            recipe.RWMutex RLock/RUnlock -> ok
//	wlock/wunlock NAME            recipe.RWMutex Lock/Unlock   -> ok
//	enqueue NAME ITEM             recipe.Queue Enqueue        -> ok
//	dequeue NAME                  its Dequeue (blocks)        -> ok ITEM
//	penqueue NAME PRIORITY ITEM   recipe.PriorityQueue Enqueue -> ok
//	pdequeue NAME                 its Dequeue (blocks)        -> ok ITEM
//	barrier-hold/-release/-wait NAME     recipe.Barrier        -> ok
//	dbarrier-enter NAME COUNT     recipe.DoubleBarrier Enter  -> ok
//	dbarrier-leave NAME           its Leave                   -> ok
//	stm-get KEY                   read-only STM txn           -> ok VALUE, or ok - if absent
//	stm-put KEY VALUE             one-write STM txn           -> ok
//	stm-bank PREFIX ACCOUNTS TRANSFERS SEED   STM transfers   -> ok TRANSFERS
//	lease                         the session's lease ID      -> ok HEX
//	bench-cycle NAME              one uncontended Lock + Unlock of concurrency.Mutex NAME,
//	                              timed in Go                 -> ok NANOSECONDS
//	bench-handoff NAME WAITERS SETTLE_MS HANDOFFS CAP_MS
//	                              the bench's hand-off protocol on NAME, each participant
//	                              a session of its own (bench.go) -> ok NANOSECONDS...
//	quit
//
// Session-bound commands (lock, election, RWMutex, double barrier, lease, bench-cycle)
// share one concurrency.Session, created at the first of them. Blocking commands wait without
// deadline: the driver bounds them by killing the process.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	"go.etcd.io/etcd/clientv3/namespace"
	recipe "go.etcd.io/etcd/contrib/recipes"
	"google.golang.org/grpc"
)

// peer holds the client, the lazily created session and the primitives whose
// release needs the object that acquired them, each by NAME.
type peer struct {
	cli     *clientv3.Client
	ttl     int
	session *concurrency.Session

	mutexes    map[string]*concurrency.Mutex
	elections  map[string]*concurrency.Election
	readLocks  map[string]*recipe.RWMutex
	writeLocks map[string]*recipe.RWMutex
	dbarriers  map[string]*recipe.DoubleBarrier
}

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated etcd endpoints, HOST:PORT")
	ns := flag.String("namespace", "", "key prefix for every key (clientv3/namespace), used as given")
	ttl := flag.Int("ttl", 10, "session TTL in seconds")
	flag.Parse()
	if *endpoints == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: distsync-go-peer --endpoints HOST:PORT[,HOST:PORT...]"+
			" [--namespace NS] [--ttl SECONDS]")
		os.Exit(2)
	}

	// WithBlock makes New wait (up to DialTimeout) until a connection is up, so
	// `ready` means connected.
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(*endpoints, ","),
		DialTimeout: 10 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithBlock()},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "distsync-go-peer: connecting to %s: %v\n", *endpoints, err)
		os.Exit(1)
	}
	if *ns != "" {
		cli.KV = namespace.NewKV(cli.KV, *ns)
		cli.Watcher = namespace.NewWatcher(cli.Watcher, *ns)
		cli.Lease = namespace.NewLease(cli.Lease, *ns)
	}

	p := &peer{
		cli:        cli,
		ttl:        *ttl,
		mutexes:    map[string]*concurrency.Mutex{},
		elections:  map[string]*concurrency.Election{},
		readLocks:  map[string]*recipe.RWMutex{},
		writeLocks: map[string]*recipe.RWMutex{},
		dbarriers:  map[string]*recipe.DoubleBarrier{},
	}

	out := bufio.NewWriter(os.Stdout)
	reply := func(line string) {
		out.WriteString(line)
		out.WriteByte('\n')
		out.Flush()
	}
	reply("ready")

	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for in.Scan() {
		args := strings.Fields(in.Text())
		if len(args) == 1 && args[0] == "quit" {
			break
		}
		tokens, err := p.run(args)
		if err != nil {
			reply("err " + oneLine(err.Error()))
		} else if len(tokens) == 0 {
			reply("ok")
		} else {
			reply("ok " + strings.Join(tokens, " "))
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "distsync-go-peer: reading stdin: %v\n", err)
	}

	if p.session != nil {
		if err := p.session.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "distsync-go-peer: closing the session: %v\n", err)
		}
	}
	cli.Close()
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// run executes one command and returns the tokens of its `ok` reply. A panic in a
// recipe (e.g. a watch channel closing under it) becomes an error.
func (p *peer) run(args []string) (tokens []string, err error) {
	defer func() {
		if r := recover(); r != nil {
			tokens, err = nil, fmt.Errorf("panic: %v", r)
		}
	}()
	if len(args) == 0 {
		return nil, errors.New("empty command")
	}
	cmd, args := args[0], args[1:]
	c, ok := commands[cmd]
	if !ok {
		return nil, fmt.Errorf("unknown command %q", cmd)
	}
	if len(args) != len(c.args) {
		return nil, fmt.Errorf("usage: %s %s", cmd, strings.Join(c.args, " "))
	}
	return c.run(p, args)
}

type command struct {
	args []string
	run  func(p *peer, args []string) ([]string, error)
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"lock":            {[]string{"NAME"}, (*peer).lock},
		"unlock":          {[]string{"NAME"}, (*peer).unlock},
		"campaign":        {[]string{"NAME", "VALUE"}, (*peer).campaign},
		"proclaim":        {[]string{"NAME", "VALUE"}, (*peer).proclaim},
		"resign":          {[]string{"NAME"}, (*peer).resign},
		"leader":          {[]string{"NAME"}, (*peer).leader},
		"observe":         {[]string{"NAME", "COUNT"}, (*peer).observe},
		"rlock":           {[]string{"NAME"}, (*peer).rlock},
		"runlock":         {[]string{"NAME"}, (*peer).runlock},
		"wlock":           {[]string{"NAME"}, (*peer).wlock},
		"wunlock":         {[]string{"NAME"}, (*peer).wunlock},
		"enqueue":         {[]string{"NAME", "ITEM"}, (*peer).enqueue},
		"dequeue":         {[]string{"NAME"}, (*peer).dequeue},
		"penqueue":        {[]string{"NAME", "PRIORITY", "ITEM"}, (*peer).penqueue},
		"pdequeue":        {[]string{"NAME"}, (*peer).pdequeue},
		"barrier-hold":    {[]string{"NAME"}, (*peer).barrierHold},
		"barrier-release": {[]string{"NAME"}, (*peer).barrierRelease},
		"barrier-wait":    {[]string{"NAME"}, (*peer).barrierWait},
		"dbarrier-enter":  {[]string{"NAME", "COUNT"}, (*peer).dbarrierEnter},
		"dbarrier-leave":  {[]string{"NAME"}, (*peer).dbarrierLeave},
		"stm-get":         {[]string{"KEY"}, (*peer).stmGet},
		"stm-put":         {[]string{"KEY", "VALUE"}, (*peer).stmPut},
		"stm-bank":        {[]string{"PREFIX", "ACCOUNTS", "TRANSFERS", "SEED"}, (*peer).stmBank},
		"lease":           {nil, (*peer).lease},
		"bench-cycle":     {[]string{"NAME"}, (*peer).benchCycle},
		"bench-handoff":   {[]string{"NAME", "WAITERS", "SETTLE_MS", "HANDOFFS", "CAP_MS"}, (*peer).benchHandoff},
	}
}

// sess returns the peer's session, creating it at the first call.
func (p *peer) sess() (*concurrency.Session, error) {
	if p.session == nil {
		s, err := concurrency.NewSession(p.cli, concurrency.WithTTL(p.ttl))
		if err != nil {
			return nil, fmt.Errorf("creating the session: %v", err)
		}
		p.session = s
	}
	return p.session, nil
}

func atoi(what, s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not an integer", what, s)
	}
	return n, nil
}

// --- concurrency.Mutex -----------------------------------------------------------

func (p *peer) lock(args []string) ([]string, error) {
	s, err := p.sess()
	if err != nil {
		return nil, err
	}
	m := concurrency.NewMutex(s, args[0])
	if err := m.Lock(context.Background()); err != nil {
		return nil, err
	}
	p.mutexes[args[0]] = m
	return []string{m.Key()}, nil
}

func (p *peer) unlock(args []string) ([]string, error) {
	m, ok := p.mutexes[args[0]]
	if !ok {
		return nil, fmt.Errorf("%s is not locked by this peer", args[0])
	}
	if err := m.Unlock(context.Background()); err != nil {
		return nil, err
	}
	delete(p.mutexes, args[0])
	return nil, nil
}

// --- concurrency.Election --------------------------------------------------------

func (p *peer) campaign(args []string) ([]string, error) {
	s, err := p.sess()
	if err != nil {
		return nil, err
	}
	e := concurrency.NewElection(s, args[0])
	p.elections[args[0]] = e
	if err := e.Campaign(context.Background(), args[1]); err != nil {
		return nil, err
	}
	return []string{e.Key(), strconv.FormatInt(e.Rev(), 10)}, nil
}

func (p *peer) election(name string) (*concurrency.Election, error) {
	e, ok := p.elections[name]
	if !ok {
		return nil, fmt.Errorf("this peer has not campaigned in %s", name)
	}
	return e, nil
}

func (p *peer) proclaim(args []string) ([]string, error) {
	e, err := p.election(args[0])
	if err != nil {
		return nil, err
	}
	return nil, e.Proclaim(context.Background(), args[1])
}

func (p *peer) resign(args []string) ([]string, error) {
	e, err := p.election(args[0])
	if err != nil {
		return nil, err
	}
	if err := e.Resign(context.Background()); err != nil {
		return nil, err
	}
	delete(p.elections, args[0])
	return nil, nil
}

func (p *peer) leader(args []string) ([]string, error) {
	s, err := p.sess()
	if err != nil {
		return nil, err
	}
	resp, err := concurrency.NewElection(s, args[0]).Leader(context.Background())
	if err == concurrency.ErrElectionNoLeader {
		return []string{"-"}, nil
	} else if err != nil {
		return nil, err
	}
	return []string{string(resp.Kvs[0].Value)}, nil
}

func (p *peer) observe(args []string) ([]string, error) {
	count, err := atoi("COUNT", args[1])
	if err != nil {
		return nil, err
	}
	s, err := p.sess()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := concurrency.NewElection(s, args[0]).Observe(ctx)
	values := make([]string, 0, count)
	for len(values) < count {
		resp, ok := <-ch
		if !ok {
			return nil, fmt.Errorf("observe ended after %d of %d values", len(values), count)
		}
		values = append(values, string(resp.Kvs[0].Value))
	}
	return values, nil
}

// --- recipe.RWMutex --------------------------------------------------------------
//
// RWMutex keeps its key unexported, so the replies carry no key; one RWMutex is
// kept per NAME and mode, and a second rlock (wlock) of a NAME this peer holds is
// refused rather than leaking the first key until the session ends.

func (p *peer) rwlock(held map[string]*recipe.RWMutex, name string, read bool) ([]string, error) {
	if _, ok := held[name]; ok {
		return nil, fmt.Errorf("this peer already holds %s in this mode", name)
	}
	s, err := p.sess()
	if err != nil {
		return nil, err
	}
	m := recipe.NewRWMutex(s, name)
	if read {
		err = m.RLock()
	} else {
		err = m.Lock()
	}
	if err != nil {
		return nil, err
	}
	held[name] = m
	return nil, nil
}

func (p *peer) rwunlock(held map[string]*recipe.RWMutex, name string, read bool) ([]string, error) {
	m, ok := held[name]
	if !ok {
		return nil, fmt.Errorf("this peer does not hold %s in this mode", name)
	}
	var err error
	if read {
		err = m.RUnlock()
	} else {
		err = m.Unlock()
	}
	if err != nil {
		return nil, err
	}
	delete(held, name)
	return nil, nil
}

func (p *peer) rlock(args []string) ([]string, error) {
	return p.rwlock(p.readLocks, args[0], true)
}

func (p *peer) runlock(args []string) ([]string, error) {
	return p.rwunlock(p.readLocks, args[0], true)
}

func (p *peer) wlock(args []string) ([]string, error) {
	return p.rwlock(p.writeLocks, args[0], false)
}

func (p *peer) wunlock(args []string) ([]string, error) {
	return p.rwunlock(p.writeLocks, args[0], false)
}

// --- recipe.Queue and recipe.PriorityQueue ---------------------------------------
//
// Queue writes NAME/<unix nanos> and dequeues the key of lowest mod revision under
// the prefix NAME, with no slash (so NAME2/... items are taken too); PriorityQueue
// writes NAME/<%05d priority>/<%016d seq> (plus the guard key __NAME/<%05d>) and
// dequeues the lexically first key under NAME/.

func (p *peer) enqueue(args []string) ([]string, error) {
	return nil, recipe.NewQueue(p.cli, args[0]).Enqueue(args[1])
}

func (p *peer) dequeue(args []string) ([]string, error) {
	item, err := recipe.NewQueue(p.cli, args[0]).Dequeue()
	if err != nil {
		return nil, err
	}
	return []string{item}, nil
}

func (p *peer) penqueue(args []string) ([]string, error) {
	pr, err := strconv.ParseUint(args[1], 10, 16)
	if err != nil {
		return nil, fmt.Errorf("PRIORITY %q is not an integer in 0..65535", args[1])
	}
	return nil, recipe.NewPriorityQueue(p.cli, args[0]).Enqueue(args[2], uint16(pr))
}

func (p *peer) pdequeue(args []string) ([]string, error) {
	item, err := recipe.NewPriorityQueue(p.cli, args[0]).Dequeue()
	if err != nil {
		return nil, err
	}
	return []string{item}, nil
}

// --- recipe.Barrier and recipe.DoubleBarrier -------------------------------------
//
// Barrier.Wait in this etcd version reads NAME as a prefix (any key starting with
// NAME counts as held) and then waits for a PUT followed by a DELETE of NAME from
// the store's revision at that read: if the hold is not the store's latest write
// when Wait starts, a Release alone does not wake it.

func (p *peer) barrierHold(args []string) ([]string, error) {
	return nil, recipe.NewBarrier(p.cli, args[0]).Hold()
}

func (p *peer) barrierRelease(args []string) ([]string, error) {
	return nil, recipe.NewBarrier(p.cli, args[0]).Release()
}

func (p *peer) barrierWait(args []string) ([]string, error) {
	return nil, recipe.NewBarrier(p.cli, args[0]).Wait()
}

// The DoubleBarrier is kept per NAME from Enter to Leave: Leave needs the key
// Enter wrote.
func (p *peer) dbarrierEnter(args []string) ([]string, error) {
	count, err := atoi("COUNT", args[1])
	if err != nil {
		return nil, err
	}
	if _, ok := p.dbarriers[args[0]]; ok {
		return nil, fmt.Errorf("this peer has already entered %s", args[0])
	}
	s, err := p.sess()
	if err != nil {
		return nil, err
	}
	b := recipe.NewDoubleBarrier(s, args[0], count)
	if err := b.Enter(); err != nil {
		return nil, err
	}
	p.dbarriers[args[0]] = b
	return nil, nil
}

func (p *peer) dbarrierLeave(args []string) ([]string, error) {
	b, ok := p.dbarriers[args[0]]
	if !ok {
		return nil, fmt.Errorf("this peer has not entered %s", args[0])
	}
	if err := b.Leave(); err != nil {
		return nil, err
	}
	delete(p.dbarriers, args[0])
	return nil, nil
}

// --- concurrency.STM -------------------------------------------------------------

func (p *peer) stmGet(args []string) ([]string, error) {
	value := "-"
	_, err := concurrency.NewSTM(p.cli, func(stm concurrency.STM) error {
		value = "-"
		if stm.Rev(args[0]) != 0 {
			value = stm.Get(args[0])
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return []string{value}, nil
}

func (p *peer) stmPut(args []string) ([]string, error) {
	_, err := concurrency.NewSTM(p.cli, func(stm concurrency.STM) error {
		stm.Put(args[0], args[1])
		return nil
	})
	return nil, err
}

// stmBank runs TRANSFERS transactions one after another, each moving half of a
// random account's balance (integer division) to another random account. The pair
// of a transfer is drawn before its transaction, so retries of a conflicting
// transaction move between the same two accounts:
//
//	i = rand.Intn(ACCOUNTS); j = rand.Intn(ACCOUNTS-1); if j >= i { j++ }
//
// with math/rand seeded with SEED.
func (p *peer) stmBank(args []string) ([]string, error) {
	prefix := args[0]
	accounts, err := atoi("ACCOUNTS", args[1])
	if err != nil {
		return nil, err
	}
	if accounts < 2 {
		return nil, errors.New("ACCOUNTS must be at least 2")
	}
	transfers, err := atoi("TRANSFERS", args[2])
	if err != nil {
		return nil, err
	}
	seed, err := strconv.ParseInt(args[3], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("SEED %q is not an integer", args[3])
	}
	rng := rand.New(rand.NewSource(seed))
	balance := func(stm concurrency.STM, key string) (int64, error) {
		if stm.Rev(key) == 0 {
			return 0, fmt.Errorf("account %s does not exist", key)
		}
		v := stm.Get(key)
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("account %s holds %q, not an integer", key, v)
		}
		return n, nil
	}
	for t := 0; t < transfers; t++ {
		i := rng.Intn(accounts)
		j := rng.Intn(accounts - 1)
		if j >= i {
			j++
		}
		from, to := fmt.Sprintf("%s/%d", prefix, i), fmt.Sprintf("%s/%d", prefix, j)
		_, err := concurrency.NewSTM(p.cli, func(stm concurrency.STM) error {
			a, err := balance(stm, from)
			if err != nil {
				return err
			}
			b, err := balance(stm, to)
			if err != nil {
				return err
			}
			moved := a / 2
			stm.Put(from, strconv.FormatInt(a-moved, 10))
			stm.Put(to, strconv.FormatInt(b+moved, 10))
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("transfer %d (%s -> %s), after %d committed: %v", t, from, to, t, err)
		}
	}
	return []string{strconv.Itoa(transfers)}, nil
}

// --- session ---------------------------------------------------------------------

func (p *peer) lease(args []string) ([]string, error) {
	s, err := p.sess()
	if err != nil {
		return nil, err
	}
	return []string{fmt.Sprintf("%x", int64(s.Lease()))}, nil
}
