//! The whole conformance suite against a real etcd (`DISTSYNC_ETCD_URL`; skipped
//! loudly when unset, a failure under `CI=true`), with fault hooks whose external lock
//! holder is `etcdctl lock` (see `common::faults`).

mod common;

distsync_conformance::conformance_tests!(common::faults::harness);
