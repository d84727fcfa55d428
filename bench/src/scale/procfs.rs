//! What this process uses, read from `/proc/self`: its resident memory and its TCP
//! connections to a store's ports.
//!
//! A connection is counted when it is ESTABLISHED (state `01` in `/proc/self/net/tcp`
//! and `tcp6`), its remote port is one of the store's and its socket inode is one of
//! this process's open file descriptors (`/proc/self/fd/* -> socket:[inode]`): the
//! `net/tcp` tables list every socket of the network namespace, the descriptors say
//! which are ours. Linux only; elsewhere the figures are `None`.

use std::collections::HashSet;

/// The client's resident memory (`VmRSS`), in kB.
pub fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// This process's established TCP connections to any of `ports` (remote side).
pub fn tcp_connections_to(ports: &[u16]) -> Option<i64> {
    let ours = socket_inodes()?;
    let mut count = 0;
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        count += established_to(&text, ports, &ours);
    }
    Some(count)
}

/// The inodes of the sockets among this process's file descriptors.
fn socket_inodes() -> Option<HashSet<u64>> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(
        entries
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter_map(|target| {
                let target = target.to_str()?;
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            })
            .collect(),
    )
}

/// Rows of a `/proc/net/tcp` table that are established, to one of `ports`, and ours.
fn established_to(table: &str, ports: &[u16], ours: &HashSet<u64>) -> i64 {
    let mut count = 0;
    for line in table.lines().skip(1) {
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(remote), Some(state), Some(inode)) =
            (fields.get(2), fields.get(3), fields.get(9))
        else {
            continue;
        };
        let port = remote
            .rsplit_once(':')
            .and_then(|(_, port)| u16::from_str_radix(port, 16).ok());
        let inode: Option<u64> = inode.parse().ok();
        if *state == "01"
            && port.is_some_and(|port| ports.contains(&port))
            && inode.is_some_and(|inode| ours.contains(&inode))
        {
            count += 1;
        }
    }
    count
}

/// The ports of the hosts of a store URL (`scheme://[user@]host:port[,host:port]/...`),
/// `default` where a host names none.
pub fn url_ports(url: &str, default: u16) -> Vec<u16> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let hosts = rest.split(['/', '?']).next().unwrap_or("");
    let hosts = hosts.rsplit_once('@').map_or(hosts, |(_, hosts)| hosts);
    let mut ports: Vec<u16> = hosts
        .split(',')
        .filter(|host| !host.is_empty())
        .map(|host| {
            // `[::1]:port`, `host:port` or a bare host.
            let after_bracket = host.rsplit_once(']').map_or(host, |(_, rest)| rest);
            after_bracket
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse().ok())
                .unwrap_or(default)
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}
