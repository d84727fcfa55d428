// The Curator peer of distsync's ZooKeeper interop test
// (backend-zookeeper/tests/it/curator_interop.rs): runs Apache Curator's own recipes
// against the same ZooKeeper as distsync and prints one line per event, which the
// test parses.
//
//   CuratorPeer lock SERVERS PATH HOLD_MS
//       InterProcessMutex on PATH: prints `granted <sequence> <czxid>` once acquired,
//       holds HOLD_MS milliseconds (a negative HOLD_MS: until a line or the end of
//       standard input), releases, prints `released`.
//
//   CuratorPeer lock-revocable SERVERS PATH
//       InterProcessMutex on PATH made revocable (makeRevocable): prints
//       `granted <sequence> <czxid>` once acquired, holds it until its listener fires
//       (someone set `__REVOKE__` on its node), prints `revoke-requested`, releases,
//       prints `released`.
//
//   CuratorPeer revoke SERVERS PATH
//       Revoker.attemptRevoke on the node of PATH's holder (the first of the mutex's
//       participant nodes): prints `revoked <node>`, or `none` when nobody holds it.
//
//   CuratorPeer read SERVERS PATH HOLD_MS
//   CuratorPeer write SERVERS PATH HOLD_MS
//       InterProcessReadWriteLock on PATH, its read or its write lock: prints `granted`
//       (a writer: `granted <czxid>`, its node's) once acquired, holds it as `lock`
//       does, releases, prints `released`.
//
//   CuratorPeer barrier-set SERVERS PATH       DistributedBarrier.setBarrier, prints `set`
//   CuratorPeer barrier-remove SERVERS PATH    removeBarrier, prints `removed`
//   CuratorPeer barrier-wait SERVERS PATH      prints `started`, waitOnBarrier, prints
//                                              `passed`
//
//   CuratorPeer double-barrier SERVERS PATH N
//       DistributedDoubleBarrier of N members: prints `started`, enters, prints
//       `entered`, waits for a line (or the end) of standard input, leaves, prints
//       `left`.
//
//   CuratorPeer semaphore SERVERS PATH MAX HOLD_MS
//       InterProcessSemaphoreV2 of MAX leases on PATH: prints `granted <lease node>
//       <czxid>` once it holds a lease, holds it as `lock` does, returns it, prints
//       `released`.
//
//   CuratorPeer latch SERVERS PATH ID
//       LeaderLatch on PATH with participant id ID: prints `started` once its node is
//       made, `leader <czxid>` (its node's) once it leads, then waits for a line (or
//       the end) of standard input, closes the latch and prints `closed`.
//
//   CuratorPeer latch-leader SERVERS PATH
//       LeaderLatch.getLeader() on PATH, without standing: prints `leader <id>`, or
//       `none` when nobody leads.
//
//   CuratorPeer selector SERVERS PATH ID
//       LeaderSelector on PATH with participant id ID: prints `started`, `leader` once
//       takeLeadership runs, then waits for a line (or the end) of standard input,
//       returns from takeLeadership, closes the selector and prints `released`.
//
//   CuratorPeer queue-put SERVERS PATH PRIORITY ITEM...
//       Puts each ITEM (UTF-8) on PATH, in the foreground: PRIORITY `-` with
//       DistributedQueue.put, `multi` with one DistributedQueue.putMulti of all of them,
//       a number with DistributedPriorityQueue.put at that priority; prints `put`.
//
//   CuratorPeer queue-take SERVERS PATH LOCK_PATH COUNT
//       A DistributedQueue consumer on PATH (with lockPath LOCK_PATH, guaranteed
//       delivery, unless it is `-`), items processed one at a time in queue order:
//       prints `started`, then `item <text>` per item; once COUNT items came and their
//       nodes are gone (the queue has COUNT item nodes fewer than at the start), closes
//       and prints `done`.
//
//   CuratorPeer bench-cycle SERVERS PATH WARMUP
//       The bench's timing mode (bench/src/peers/curator.rs): one InterProcessMutex on
//       PATH, uncontended. Runs WARMUP acquire+release cycles (at most 30 s of them) so
//       that the JIT has compiled the path before anything is timed, prints `ready`;
//       then for each line `cycle` on standard input runs one acquire+release and
//       prints its duration in nanoseconds (System.nanoTime, so neither the JVM's
//       start-up nor the pipe to the bench is counted). A line `quit` or the end of
//       standard input ends it.
//
//   CuratorPeer bench-handoff SERVERS PATH WAITERS SETTLE_MS HANDOFFS CAP_MS WARMUP
//       The bench's hand-off mode (bench/src/handoff.rs, the same protocol): WAITERS + 1
//       participants, each a Curator client (its own ZooKeeper session) and an
//       InterProcessMutex on PATH in a thread of its own, loop acquire, hold until
//       every other participant is inside acquire() and the last of them entered at
//       least SETTLE_MS ago, release, acquire again. A hand-off is the time from a
//       holder calling release() to the next participant returning from acquire(),
//       both read with System.nanoTime in this one JVM. Connects every client and runs
//       WARMUP uncontended cycles on PATH (at most 30 s of them) for the JIT, prints
//       `ready`, waits for a line `run`; then measures until HANDOFFS hand-offs (the
//       first WAITERS + 1, each participant's first grant, not counted) or CAP_MS, and
//       prints `sample <nanoseconds>` per hand-off, `error <text>` if a participant
//       failed, and `done`. A line `quit` or the end of standard input ends it.
//
// Errors go to standard error and exit with status 1. Built by scripts/curator-peer.sh
// against Debian's Curator and ZooKeeper jars.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;

import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.barriers.DistributedBarrier;
import org.apache.curator.framework.recipes.barriers.DistributedDoubleBarrier;
import org.apache.curator.framework.recipes.leader.LeaderLatch;
import org.apache.curator.framework.recipes.leader.LeaderSelector;
import org.apache.curator.framework.recipes.leader.LeaderSelectorListenerAdapter;
import org.apache.curator.framework.recipes.leader.Participant;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.framework.recipes.queue.DistributedPriorityQueue;
import org.apache.curator.framework.recipes.queue.DistributedQueue;
import org.apache.curator.framework.recipes.queue.QueueBuilder;
import org.apache.curator.framework.recipes.queue.QueueConsumer;
import org.apache.curator.framework.recipes.queue.QueueSerializer;
import org.apache.curator.framework.recipes.locks.InterProcessReadWriteLock;
import org.apache.curator.framework.recipes.locks.InterProcessSemaphoreV2;
import org.apache.curator.framework.recipes.locks.Lease;
import org.apache.curator.framework.recipes.locks.Revoker;
import org.apache.curator.framework.state.ConnectionState;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.zookeeper.data.Stat;

public final class CuratorPeer {
    /** InterProcessMutex with its node's path readable (Curator keeps it protected). */
    static final class Mutex extends InterProcessMutex {
        Mutex(CuratorFramework client, String path) {
            super(client, path);
        }

        String nodePath() {
            return getLockPath();
        }
    }

    private CuratorPeer() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            usage();
        }
        switch (args[0]) {
            case "lock":
                if (args.length != 4) {
                    usage();
                }
                lock(args[1], args[2], Long.parseLong(args[3]));
                break;
            case "lock-revocable":
                if (args.length != 3) {
                    usage();
                }
                lockRevocable(args[1], args[2]);
                break;
            case "revoke":
                if (args.length != 3) {
                    usage();
                }
                revoke(args[1], args[2]);
                break;
            case "read":
            case "write":
                if (args.length != 4) {
                    usage();
                }
                readWrite(args[0].equals("write"), args[1], args[2], Long.parseLong(args[3]));
                break;
            case "barrier-set":
            case "barrier-remove":
            case "barrier-wait":
                if (args.length != 3) {
                    usage();
                }
                barrier(args[0], args[1], args[2]);
                break;
            case "double-barrier":
                if (args.length != 4) {
                    usage();
                }
                doubleBarrier(args[1], args[2], Integer.parseInt(args[3]));
                break;
            case "semaphore":
                if (args.length != 5) {
                    usage();
                }
                semaphore(args[1], args[2], Integer.parseInt(args[3]), Long.parseLong(args[4]));
                break;
            case "latch":
                if (args.length != 4) {
                    usage();
                }
                latch(args[1], args[2], args[3]);
                break;
            case "latch-leader":
                if (args.length != 3) {
                    usage();
                }
                latchLeader(args[1], args[2]);
                break;
            case "selector":
                if (args.length != 4) {
                    usage();
                }
                selector(args[1], args[2], args[3]);
                break;
            case "queue-put":
                if (args.length < 5) {
                    usage();
                }
                queuePut(args[1], args[2], args[3], java.util.Arrays.copyOfRange(args, 4, args.length));
                break;
            case "queue-take":
                if (args.length != 5) {
                    usage();
                }
                queueTake(args[1], args[2], args[3], Integer.parseInt(args[4]));
                break;
            case "bench-cycle":
                if (args.length != 4) {
                    usage();
                }
                benchCycle(args[1], args[2], Integer.parseInt(args[3]));
                break;
            case "bench-handoff":
                if (args.length != 8) {
                    usage();
                }
                benchHandoff(args[1], args[2], Integer.parseInt(args[3]), Long.parseLong(args[4]),
                        Integer.parseInt(args[5]), Long.parseLong(args[6]), Integer.parseInt(args[7]));
                break;
            default:
                usage();
        }
    }

    private static void usage() {
        System.err.println("usage: CuratorPeer lock SERVERS PATH HOLD_MS");
        System.err.println("       CuratorPeer lock-revocable|revoke SERVERS PATH");
        System.err.println("       CuratorPeer read|write SERVERS PATH HOLD_MS");
        System.err.println("       CuratorPeer barrier-set|barrier-remove|barrier-wait SERVERS PATH");
        System.err.println("       CuratorPeer double-barrier SERVERS PATH N");
        System.err.println("       CuratorPeer semaphore SERVERS PATH MAX HOLD_MS");
        System.err.println("       CuratorPeer latch SERVERS PATH ID");
        System.err.println("       CuratorPeer latch-leader SERVERS PATH");
        System.err.println("       CuratorPeer selector SERVERS PATH ID");
        System.err.println("       CuratorPeer queue-put SERVERS PATH -|multi|PRIORITY ITEM...");
        System.err.println("       CuratorPeer queue-take SERVERS PATH -|LOCK_PATH COUNT");
        System.err.println("       CuratorPeer bench-cycle SERVERS PATH WARMUP");
        System.err.println(
                "       CuratorPeer bench-handoff SERVERS PATH WAITERS SETTLE_MS HANDOFFS CAP_MS WARMUP");
        System.exit(2);
    }

    private static CuratorFramework connect(String servers) throws InterruptedException {
        CuratorFramework client = CuratorFrameworkFactory.builder()
                .connectString(servers)
                .sessionTimeoutMs(10_000)
                .connectionTimeoutMs(5_000)
                .retryPolicy(new ExponentialBackoffRetry(100, 3))
                .build();
        client.start();
        if (!client.blockUntilConnected(10, java.util.concurrent.TimeUnit.SECONDS)) {
            throw new IllegalStateException("no connection to " + servers);
        }
        return client;
    }

    private static void lock(String servers, String path, long holdMs) throws Exception {
        try (CuratorFramework client = connect(servers)) {
            Mutex mutex = new Mutex(client, path);
            System.out.println("started");
            System.out.flush();
            mutex.acquire();
            String node = mutex.nodePath();
            Stat stat = client.checkExists().forPath(node);
            String sequence = node.substring(node.lastIndexOf("lock-") + "lock-".length());
            System.out.println("granted " + sequence + " " + stat.getCzxid());
            System.out.flush();
            hold(holdMs);
            mutex.release();
            System.out.println("released");
            System.out.flush();
        }
    }

    private static void lockRevocable(String servers, String path) throws Exception {
        try (CuratorFramework client = connect(servers)) {
            Mutex mutex = new Mutex(client, path);
            java.util.concurrent.CountDownLatch asked = new java.util.concurrent.CountDownLatch(1);
            mutex.makeRevocable(forLock -> asked.countDown());
            System.out.println("started");
            System.out.flush();
            mutex.acquire();
            String node = mutex.nodePath();
            Stat stat = client.checkExists().forPath(node);
            String sequence = node.substring(node.lastIndexOf("lock-") + "lock-".length());
            System.out.println("granted " + sequence + " " + stat.getCzxid());
            System.out.flush();
            asked.await();
            System.out.println("revoke-requested");
            System.out.flush();
            mutex.release();
            System.out.println("released");
            System.out.flush();
        }
    }

    private static void revoke(String servers, String path) throws Exception {
        try (CuratorFramework client = connect(servers)) {
            java.util.Collection<String> nodes = new InterProcessMutex(client, path).getParticipantNodes();
            if (nodes.isEmpty()) {
                System.out.println("none");
            } else {
                String holder = nodes.iterator().next();
                Revoker.attemptRevoke(client, holder);
                System.out.println("revoked " + holder);
            }
            System.out.flush();
        }
    }

    private static void benchCycle(String servers, String path, int warmup) throws Exception {
        try (CuratorFramework client = connect(servers)) {
            InterProcessMutex mutex = new InterProcessMutex(client, path);
            long warmupEnd = System.nanoTime() + 30_000_000_000L;
            for (int i = 0; i < warmup && System.nanoTime() < warmupEnd; i++) {
                mutex.acquire();
                mutex.release();
            }
            System.out.println("ready");
            System.out.flush();
            BufferedReader input =
                    new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
            for (String line = input.readLine(); line != null && line.equals("cycle");
                    line = input.readLine()) {
                long start = System.nanoTime();
                mutex.acquire();
                mutex.release();
                long took = System.nanoTime() - start;
                System.out.println(took);
                System.out.flush();
            }
        }
    }

    /**
     * The shared bookkeeping of bench-handoff's participants: the Java twin of the
     * bench's `Line` (bench/src/handoff.rs), so that both measure the same thing.
     */
    static final class HandoffLine {
        private final int waiters;
        private final long settleNanos;
        private final int wanted;
        private final long deadline;
        /** Participants inside acquire(). */
        private int waiting;
        /** When the last participant entered acquire(). */
        private long lastEntered = System.nanoTime();
        /** When the current holder called release(), if a sample is to follow. */
        private boolean released;
        private long releasedAt;
        /** Grants that followed a release. */
        private int handoffs;
        private final java.util.List<Long> samples = new java.util.ArrayList<>();
        private boolean stop;
        private String error;

        HandoffLine(int waiters, long settleNanos, int wanted, long deadline) {
            this.waiters = waiters;
            this.settleNanos = settleNanos;
            this.wanted = wanted;
            this.deadline = deadline;
        }

        synchronized void entering() {
            waiting++;
            lastEntered = System.nanoTime();
            notifyAll();
        }

        /** Records a grant at `at`; returns whether the run is over. */
        synchronized boolean granted(long at) {
            waiting--;
            if (released) {
                released = false;
                handoffs++;
                if (handoffs > waiters + 1) {
                    samples.add(at - releasedAt);
                }
            }
            if (samples.size() >= wanted || at - deadline >= 0) {
                stop = true;
                notifyAll();
            }
            return stop;
        }

        /** Waits until every other participant is in line and settled, or the run ends. */
        synchronized void full() throws InterruptedException {
            while (!stop) {
                long now = System.nanoTime();
                long left = waiting >= waiters ? settleNanos - (now - lastEntered) : deadline - now;
                if (left <= 0) {
                    if (waiting < waiters) {
                        // The line never filled before the cap: the run ends.
                        stop = true;
                        notifyAll();
                    }
                    return;
                }
                wait(left / 1_000_000, (int) (left % 1_000_000));
            }
        }

        /** Marks the start of a release; no sample follows a release after the stop. */
        synchronized void releasing() {
            released = !stop;
            releasedAt = System.nanoTime();
        }

        synchronized void fail(Exception failure) {
            if (error == null) {
                error = failure.toString().replace('\n', ' ');
            }
            stop = true;
            notifyAll();
        }

        synchronized boolean stopped() {
            return stop;
        }

        /** One participant's turns: acquire, wait for a full line, release, again. */
        void turns(InterProcessMutex mutex) throws Exception {
            while (true) {
                entering();
                mutex.acquire();
                boolean over = granted(System.nanoTime());
                if (!over) {
                    full();
                }
                releasing();
                mutex.release();
                if (over || stopped()) {
                    return;
                }
            }
        }
    }

    private static void benchHandoff(String servers, String path, int waiters, long settleMs, int wanted,
            long capMs, int warmup) throws Exception {
        java.util.List<CuratorFramework> clients = new java.util.ArrayList<>();
        try {
            for (int i = 0; i <= waiters; i++) {
                clients.add(connect(servers));
            }
            InterProcessMutex first = new InterProcessMutex(clients.get(0), path);
            long warmupEnd = System.nanoTime() + 30_000_000_000L;
            for (int i = 0; i < warmup && System.nanoTime() - warmupEnd < 0; i++) {
                first.acquire();
                first.release();
            }
            System.out.println("ready");
            System.out.flush();
            BufferedReader input =
                    new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
            if (!"run".equals(input.readLine())) {
                return;
            }
            HandoffLine line = new HandoffLine(waiters, settleMs * 1_000_000L, wanted,
                    System.nanoTime() + capMs * 1_000_000L);
            java.util.List<Thread> threads = new java.util.ArrayList<>();
            for (CuratorFramework client : clients) {
                InterProcessMutex mutex = new InterProcessMutex(client, path);
                Thread thread = new Thread(() -> {
                    try {
                        line.turns(mutex);
                    } catch (Exception failure) {
                        line.fail(failure);
                    }
                });
                thread.setDaemon(true);
                threads.add(thread);
                thread.start();
            }
            // After the stop every waiter still gets the lock once, to leave.
            long drainEnd = System.nanoTime() + (capMs + 30_000L) * 1_000_000L;
            for (Thread thread : threads) {
                long left = (drainEnd - System.nanoTime()) / 1_000_000L;
                thread.join(Math.max(left, 1));
                if (thread.isAlive()) {
                    line.fail(new IllegalStateException("participants did not finish in time"));
                    break;
                }
            }
            synchronized (line) {
                for (long sample : line.samples) {
                    System.out.println("sample " + sample);
                }
                if (line.error != null) {
                    System.out.println("error " + line.error);
                }
            }
            System.out.println("done");
            System.out.flush();
            for (String rest = input.readLine(); rest != null && !rest.equals("quit"); rest = input.readLine()) {
                // Nothing else is asked of this mode.
            }
        } finally {
            // Closed side by side: one by one, a hundred sessions take seconds to end.
            clients.parallelStream().forEach(CuratorFramework::close);
        }
    }

    /** Holds HOLD_MS milliseconds, or with a negative HOLD_MS until a line or EOF. */
    private static void hold(long holdMs) throws Exception {
        if (holdMs >= 0) {
            Thread.sleep(holdMs);
        } else {
            new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8)).readLine();
        }
    }

    private static void semaphore(String servers, String path, int max, long holdMs) throws Exception {
        try (CuratorFramework client = connect(servers)) {
            InterProcessSemaphoreV2 semaphore = new InterProcessSemaphoreV2(client, path, max);
            System.out.println("started");
            System.out.flush();
            Lease lease = semaphore.acquire();
            String node = lease.getNodeName();
            Stat stat = client.checkExists().forPath(path + "/leases/" + node);
            System.out.println("granted " + node + " " + stat.getCzxid());
            System.out.flush();
            hold(holdMs);
            semaphore.returnLease(lease);
            System.out.println("released");
            System.out.flush();
        }
    }

    private static void readWrite(boolean write, String servers, String path, long holdMs)
            throws Exception {
        try (CuratorFramework client = connect(servers)) {
            InterProcessReadWriteLock rw = new InterProcessReadWriteLock(client, path);
            InterProcessMutex lock = write ? rw.writeLock() : rw.readLock();
            System.out.println("started");
            System.out.flush();
            lock.acquire();
            if (write) {
                // A granted writer is first in line: the contender of lowest sequence.
                String first = null;
                for (String child : client.getChildren().forPath(path)) {
                    if (child.length() >= 10 && (first == null
                            || child.substring(child.length() - 10)
                                    .compareTo(first.substring(first.length() - 10)) < 0)) {
                        first = child;
                    }
                }
                Stat stat = client.checkExists().forPath(path + "/" + first);
                System.out.println("granted " + stat.getCzxid());
            } else {
                System.out.println("granted");
            }
            System.out.flush();
            hold(holdMs);
            lock.release();
            System.out.println("released");
            System.out.flush();
        }
    }

    private static void barrier(String command, String servers, String path) throws Exception {
        try (CuratorFramework client = connect(servers)) {
            DistributedBarrier barrier = new DistributedBarrier(client, path);
            switch (command) {
                case "barrier-set":
                    barrier.setBarrier();
                    System.out.println("set");
                    break;
                case "barrier-remove":
                    barrier.removeBarrier();
                    System.out.println("removed");
                    break;
                default:
                    System.out.println("started");
                    System.out.flush();
                    barrier.waitOnBarrier();
                    System.out.println("passed");
                    break;
            }
            System.out.flush();
        }
    }

    private static void doubleBarrier(String servers, String path, int members) throws Exception {
        try (CuratorFramework client = connect(servers)) {
            DistributedDoubleBarrier barrier = new DistributedDoubleBarrier(client, path, members);
            System.out.println("started");
            System.out.flush();
            barrier.enter();
            System.out.println("entered");
            System.out.flush();
            hold(-1);
            barrier.leave();
            System.out.println("left");
            System.out.flush();
        }
    }

    private static void latch(String servers, String path, String id) throws Exception {
        try (CuratorFramework client = connect(servers)) {
            LeaderLatch latch = new LeaderLatch(client, path, id);
            latch.start();
            // start() creates the node in the background: `started` means it is in line.
            while (latch.getOurPath() == null) {
                Thread.sleep(10);
            }
            System.out.println("started");
            System.out.flush();
            latch.await();
            Stat stat = client.checkExists().forPath(latch.getOurPath());
            System.out.println("leader " + stat.getCzxid());
            System.out.flush();
            hold(-1);
            latch.close();
            System.out.println("closed");
            System.out.flush();
        }
    }

    private static void latchLeader(String servers, String path) throws Exception {
        try (CuratorFramework client = connect(servers)) {
            Participant leader = new LeaderLatch(client, path).getLeader();
            System.out.println(leader.isLeader() ? "leader " + leader.getId() : "none");
            System.out.flush();
        }
    }

    /** Items as their UTF-8 bytes, as distsync's queues hold bytes. */
    static final class Utf8 implements QueueSerializer<String> {
        @Override
        public byte[] serialize(String item) {
            return item.getBytes(StandardCharsets.UTF_8);
        }

        @Override
        public String deserialize(byte[] bytes) {
            return new String(bytes, StandardCharsets.UTF_8);
        }
    }

    private static void queuePut(String servers, String path, String priority, String[] items)
            throws Exception {
        try (CuratorFramework client = connect(servers)) {
            QueueBuilder<String> builder =
                    QueueBuilder.builder(client, null, new Utf8(), path).putInBackground(false);
            if (priority.equals("-") || priority.equals("multi")) {
                DistributedQueue<String> queue = builder.buildQueue();
                queue.start();
                if (priority.equals("multi")) {
                    java.util.Iterator<String> each = java.util.Arrays.asList(items).iterator();
                    queue.putMulti(() -> each.hasNext() ? each.next() : null);
                } else {
                    for (String item : items) {
                        queue.put(item);
                    }
                }
                queue.close();
            } else {
                DistributedPriorityQueue<String> queue = builder.buildPriorityQueue(0);
                queue.start();
                for (String item : items) {
                    queue.put(item, Integer.parseInt(priority));
                }
                queue.close();
            }
            System.out.println("put");
            System.out.flush();
        }
    }

    /** How many item nodes the queue at PATH has (none when it does not exist). */
    private static long queued(CuratorFramework client, String path) throws Exception {
        if (client.checkExists().forPath(path) == null) {
            return 0;
        }
        return client.getChildren().forPath(path).stream().filter(c -> c.startsWith("queue-")).count();
    }

    private static void queueTake(String servers, String path, String lockPath, int count)
            throws Exception {
        try (CuratorFramework client = connect(servers)) {
            java.util.concurrent.CountDownLatch taken = new java.util.concurrent.CountDownLatch(count);
            QueueConsumer<String> consumer = new QueueConsumer<String>() {
                @Override
                public void consumeMessage(String item) {
                    System.out.println("item " + item);
                    System.out.flush();
                    taken.countDown();
                }

                @Override
                public void stateChanged(CuratorFramework client, ConnectionState state) {}
            };
            // One item at a time, on the queue's own thread, so items print in queue order.
            QueueBuilder<String> builder = QueueBuilder.builder(client, consumer, new Utf8(), path)
                    .executor(Runnable::run);
            if (!lockPath.equals("-")) {
                builder = builder.lockPath(lockPath);
            }
            DistributedQueue<String> queue = builder.buildQueue();
            long before = queued(client, path);
            queue.start();
            System.out.println("started");
            System.out.flush();
            if (!taken.await(30, java.util.concurrent.TimeUnit.SECONDS)) {
                throw new IllegalStateException("fewer than " + count + " items in 30 s");
            }
            // The item nodes go after the consumer returns: close once they are gone
            // (the queue's other items, such as those held by others, stay).
            long deadline = System.currentTimeMillis() + 10_000;
            while (queued(client, path) > before - count) {
                if (System.currentTimeMillis() > deadline) {
                    throw new IllegalStateException("consumed items still queued after 10 s");
                }
                Thread.sleep(10);
            }
            queue.close();
            System.out.println("done");
            System.out.flush();
        }
    }

    private static void selector(String servers, String path, String id) throws Exception {
        try (CuratorFramework client = connect(servers)) {
            java.util.concurrent.CountDownLatch done = new java.util.concurrent.CountDownLatch(1);
            LeaderSelector selector = new LeaderSelector(client, path, new LeaderSelectorListenerAdapter() {
                @Override
                public void takeLeadership(CuratorFramework leading) throws Exception {
                    System.out.println("leader");
                    System.out.flush();
                    hold(-1);
                    done.countDown();
                }
            });
            selector.setId(id);
            selector.start();
            System.out.println("started");
            System.out.flush();
            done.await();
            // close() interrupts a leader still inside takeLeadership and waits for its
            // mutex release.
            selector.close();
            System.out.println("released");
            System.out.flush();
        }
    }
}
