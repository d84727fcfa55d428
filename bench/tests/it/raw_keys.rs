//! The keys and names the raw sequences derive from the bench's lock names.

#[cfg(feature = "mysql")]
mod mysql {
    use distsync_bench::raw::mysql::lock_name;

    #[test]
    fn a_get_lock_name_fits_the_servers_64_characters_and_is_stable() {
        let long = format!(
            "distsync-bench/1764390000-12345/aggregate/raw/{}",
            "x".repeat(80)
        );
        let name = lock_name(&long);
        assert!(name.len() <= 64, "{name}");
        assert_eq!(name, lock_name(&long));
        assert_ne!(name, lock_name("distsync-bench/other"));
    }
}

#[cfg(feature = "nats")]
mod nats {
    use distsync_bench::raw::nats::key;

    #[test]
    fn a_kv_key_keeps_path_characters_and_replaces_the_rest() {
        assert_eq!(
            key("distsync-bench/1764390000-12345/cycle/raw"),
            "distsync-bench-raw/distsync-bench/1764390000-12345/cycle/raw"
        );
        assert_eq!(key("a b:c*d>e"), "distsync-bench-raw/a_b_c_d_e");
    }
}
