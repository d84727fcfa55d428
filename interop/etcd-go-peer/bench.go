package main

// The bench's timing commands (bench/src/peers/go_mutex.rs): concurrency.Mutex timed
// in Go, so that the bench's rows hold Go's own figures and not the pipe between the
// bench and this process.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3/concurrency"
)

// benchCycle runs one uncontended Lock and Unlock of the concurrency.Mutex NAME
// through the peer's session and replies with their duration in nanoseconds
// (time.Now, monotonic).
func (p *peer) benchCycle(args []string) ([]string, error) {
	s, err := p.sess()
	if err != nil {
		return nil, err
	}
	m := concurrency.NewMutex(s, args[0])
	start := time.Now()
	if err := m.Lock(context.Background()); err != nil {
		return nil, err
	}
	if err := m.Unlock(context.Background()); err != nil {
		return nil, err
	}
	return []string{strconv.FormatInt(time.Since(start).Nanoseconds(), 10)}, nil
}

// benchHandoff runs the bench's hand-off protocol (bench/src/handoff.rs) on the
// concurrency.Mutex NAME: WAITERS + 1 participants, each a session of its own (a lease
// on the peer's one client, as distsync's participants are sessions of one client)
// and a goroutine, loop Lock, hold until every other participant is inside Lock and
// the last of them entered at least SETTLE_MS ago, Unlock, Lock again. A hand-off is
// the time from a holder calling Unlock to the next participant returning from Lock.
// The first WAITERS + 1 hand-offs (each participant's first grant) are not counted.
// It stops after HANDOFFS hand-offs or CAP_MS, lets every waiter hold once more to
// leave, and replies with the hand-offs in nanoseconds, or the first participant's
// error.
func (p *peer) benchHandoff(args []string) ([]string, error) {
	waiters, err := atoi("WAITERS", args[1])
	if err != nil {
		return nil, err
	}
	settleMs, err := atoi("SETTLE_MS", args[2])
	if err != nil {
		return nil, err
	}
	wanted, err := atoi("HANDOFFS", args[3])
	if err != nil {
		return nil, err
	}
	capMs, err := atoi("CAP_MS", args[4])
	if err != nil {
		return nil, err
	}
	if waiters < 0 || settleMs < 0 || wanted < 0 || capMs < 0 {
		return nil, errors.New("WAITERS, SETTLE_MS, HANDOFFS and CAP_MS must not be negative")
	}
	sessions := make([]*concurrency.Session, 0, waiters+1)
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
	}()
	for i := 0; i <= waiters; i++ {
		s, err := concurrency.NewSession(p.cli, concurrency.WithTTL(p.ttl))
		if err != nil {
			return nil, fmt.Errorf("opening participant %d's session: %v", i, err)
		}
		sessions = append(sessions, s)
	}
	l := newHandoffLine(waiters, time.Duration(settleMs)*time.Millisecond, wanted,
		time.Duration(capMs)*time.Millisecond)
	defer l.cap.Stop()
	var wg sync.WaitGroup
	failures := make(chan error, len(sessions))
	for _, s := range sessions {
		wg.Add(1)
		go func(m *concurrency.Mutex) {
			defer wg.Done()
			if err := l.turns(m); err != nil {
				// No holder waits for a participant that failed.
				l.stop()
				failures <- err
			}
		}(concurrency.NewMutex(s, args[0]))
	}
	wg.Wait()
	close(failures)
	if err := <-failures; err != nil {
		return nil, err
	}
	tokens := make([]string, len(l.samples))
	for i, d := range l.samples {
		tokens[i] = strconv.FormatInt(d.Nanoseconds(), 10)
	}
	return tokens, nil
}

// handoffLine is the shared bookkeeping of one line of participants.
type handoffLine struct {
	mu      sync.Mutex
	changed *sync.Cond
	waiters int
	settle  time.Duration
	wanted  int
	// cap stops the run at its time cap.
	cap *time.Timer

	// Participants inside Lock.
	waiting int
	// When the last participant entered Lock.
	lastEntered time.Time
	// When the current holder called Unlock; zero when no hand-off is under way.
	releasedAt time.Time
	// Grants that followed an Unlock.
	handoffs int
	samples  []time.Duration
	stopped  bool
}

func newHandoffLine(waiters int, settle time.Duration, wanted int, capAfter time.Duration) *handoffLine {
	l := &handoffLine{waiters: waiters, settle: settle, wanted: wanted, lastEntered: time.Now()}
	l.changed = sync.NewCond(&l.mu)
	l.cap = time.AfterFunc(capAfter, l.stop)
	return l
}

func (l *handoffLine) stop() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
	l.changed.Broadcast()
}

func (l *handoffLine) isStopped() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopped
}

func (l *handoffLine) entering() {
	l.mu.Lock()
	l.waiting++
	l.lastEntered = time.Now()
	l.mu.Unlock()
	l.changed.Broadcast()
}

// granted records a grant at `at` and reports whether the run is over.
func (l *handoffLine) granted(at time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.waiting--
	if !l.releasedAt.IsZero() {
		l.handoffs++
		if l.handoffs > l.waiters+1 {
			l.samples = append(l.samples, at.Sub(l.releasedAt))
		}
		l.releasedAt = time.Time{}
	}
	if len(l.samples) >= l.wanted {
		l.stopped = true
	}
	return l.stopped
}

// full waits until every other participant is inside Lock and settled, or the run
// stops.
func (l *handoffLine) full() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for !l.stopped {
		if l.waiting >= l.waiters {
			left := l.settle - time.Since(l.lastEntered)
			if left <= 0 {
				return
			}
			l.mu.Unlock()
			time.Sleep(left)
			l.mu.Lock()
			continue
		}
		l.changed.Wait()
	}
}

// releasing marks the start of an Unlock; no hand-off is counted after the stop.
func (l *handoffLine) releasing() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		l.releasedAt = time.Time{}
	} else {
		l.releasedAt = time.Now()
	}
}

// turns is one participant: Lock, wait for a full line, Unlock, again, until the run
// stops.
func (l *handoffLine) turns(m *concurrency.Mutex) error {
	for {
		l.entering()
		if err := m.Lock(context.Background()); err != nil {
			return err
		}
		over := l.granted(time.Now())
		if !over {
			l.full()
		}
		l.releasing()
		if err := m.Unlock(context.Background()); err != nil {
			return err
		}
		if over || l.isStopped() {
			return nil
		}
	}
}
