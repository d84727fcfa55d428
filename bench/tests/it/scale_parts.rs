//! The scale case's parts: its figures, the child process's JSON, /proc.

mod scale {
    use std::time::Duration;

    use distsync_bench::scale::*;

    #[test]
    fn per_hold_figures() {
        let point = SizePoint {
            holds: 100,
            open_sessions: Duration::from_millis(50),
            acquire_all: Duration::from_millis(200),
            rss_kb: Some(1_400),
            connections: Some(2),
            keepalive: Some(Requests {
                count: 200,
                window: Duration::from_secs(10),
            }),
        };
        assert_eq!(point.acquire_per_hold(), Duration::from_millis(2));
        assert_eq!(point.open_per_session(), Duration::from_micros(500));
        assert_eq!(point.rss_per_hold_kb(Some(1_000)), Some(4.0));
        assert_eq!(point.rss_per_hold_kb(None), None);
        // 200 requests in two 5 s intervals from 100 sessions: one each per interval.
        let per = point.keepalive_per_session(Duration::from_secs(5)).unwrap();
        assert!((per - 1.0).abs() < 1e-9, "{per}");
        assert!((point.keepalive.unwrap().per_sec() - 20.0).abs() < 1e-9);
    }
}

mod scale_isolated {
    use std::time::Duration;

    use distsync_bench::handoff::HandoffResult;
    use distsync_bench::scale::{Requests, ScaleResult, SizePoint};
    use distsync_bench::stats::Samples;

    #[test]
    fn a_result_survives_the_trip_through_json() {
        let mut samples = Samples::new();
        samples.push(Duration::from_micros(300));
        samples.push(Duration::from_micros(700));
        let result = ScaleResult {
            holds: 10,
            waiting: 2,
            ttl: Duration::from_secs(15),
            connections_peak: Some(3),
            rss_connected_kb: Some(1_000),
            sizes: vec![SizePoint {
                holds: 10,
                open_sessions: Duration::from_millis(1),
                acquire_all: Duration::from_millis(2),
                rss_kb: Some(1_100),
                connections: Some(3),
                keepalive: Some(Requests {
                    count: 10,
                    window: Duration::from_secs(5),
                }),
            }],
            handoff: vec![HandoffResult {
                samples,
                error: Some("late".into()),
                ..HandoffResult::new(None, 1)
            }],
            ..ScaleResult::default()
        };
        let json = serde_json::to_string(&result).unwrap();
        let back: ScaleResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back.sizes, result.sizes);
        assert_eq!(back.connections_peak, Some(3));
        assert_eq!(back.ttl, Duration::from_secs(15));
        assert_eq!(back.handoff.len(), 1);
        assert_eq!(
            back.handoff[0].samples.durations(),
            result.handoff[0].samples.durations()
        );
        assert_eq!(back.handoff[0].error.as_deref(), Some("late"));
    }
}

mod scale_procfs {
    use distsync_bench::scale::procfs::*;

    #[test]
    fn reads_this_process_resident_memory() {
        let rss = rss_kb().expect("VmRSS in /proc/self/status");
        assert!(rss > 0);
    }

    #[test]
    fn a_connection_of_ours_is_counted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let before = tcp_connections_to(&[port]).expect("Linux /proc");
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server, _) = listener.accept().unwrap();
        // The accepted end's remote port is the client's, not `port`: one connection.
        assert_eq!(tcp_connections_to(&[port]), Some(before + 1));
    }

    #[test]
    fn ports_of_store_urls() {
        assert_eq!(url_ports("etcd://127.0.0.1:23790", 2379), [23790]);
        assert_eq!(
            url_ports("etcd://u:p@h1:3,h2:1,h3/ns?tls=true", 2379),
            [1, 3, 2379]
        );
        assert_eq!(url_ports("redis://[::1]:26379/0", 6379), [26379]);
        assert_eq!(url_ports("postgres://distsync@localhost/db", 5432), [5432]);
    }
}
