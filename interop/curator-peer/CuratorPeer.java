// The Curator peer of distsync's ZooKeeper interop test
// (backend-zookeeper/tests/curator_interop.rs): runs Apache Curator's own recipes
// against the same ZooKeeper as distsync and prints one line per event, which the
// test parses.
//
//   CuratorPeer lock SERVERS PATH HOLD_MS
//       InterProcessMutex on PATH: prints `granted <sequence> <czxid>` once acquired,
//       holds HOLD_MS milliseconds (a negative HOLD_MS: until a line or the end of
//       standard input), releases, prints `released`.
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
// Errors go to standard error and exit with status 1. Built by scripts/curator-peer.sh
// against Debian's Curator and ZooKeeper jars.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;

import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.barriers.DistributedBarrier;
import org.apache.curator.framework.recipes.barriers.DistributedDoubleBarrier;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.framework.recipes.locks.InterProcessReadWriteLock;
import org.apache.curator.framework.recipes.locks.InterProcessSemaphoreV2;
import org.apache.curator.framework.recipes.locks.Lease;
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
            default:
                usage();
        }
    }

    private static void usage() {
        System.err.println("usage: CuratorPeer lock SERVERS PATH HOLD_MS");
        System.err.println("       CuratorPeer read|write SERVERS PATH HOLD_MS");
        System.err.println("       CuratorPeer barrier-set|barrier-remove|barrier-wait SERVERS PATH");
        System.err.println("       CuratorPeer double-barrier SERVERS PATH N");
        System.err.println("       CuratorPeer semaphore SERVERS PATH MAX HOLD_MS");
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
}
