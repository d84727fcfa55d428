//! Where the promotion record lives: the key that keeps the time a grant script first
//! saw a replica promoted, which bounds the lock-delay of new lines after a failover
//! (see [`crate::amnesia`], "Failovers", and `promotion_left` in `lua/lib.lua`).
//!
//! One server (or a Sentinel group): one key per namespace, `{<ns>promoted}`, so one
//! sighting serves every new line of the namespace. Redis Cluster: a script touches
//! keys of one hash slot only, the line's, so the record is one key per slot,
//! `{<ns>promoted:<tag>}`, the three-character `<tag>` picked so that the key hashes to
//! the line's slot.
//!
//! **Picking the tag.** A slot is the CRC16 (XMODEM: polynomial 0x1021, initial value
//! 0, no final XOR) of the hash tag, modulo 16384 (its low 14 bits). That CRC is linear
//! over equal-length texts, and zero bytes in front leave it unchanged, so for the
//! hash tag `<base><tag>` (`<base>` = `<ns>promoted:`) it is
//! `crc(<base>\0\0\0) ^ crc(<tag>)`. One table, built once for every namespace, gives
//! for each 14-bit value a tag whose CRC has it ([`TAGS`]); the tag for a slot is the
//! table's entry at `slot ^ crc(<base>\0\0\0)`. A namespace holding `}` ends every
//! hash tag of its keys inside the namespace: all of them then share one slot, the
//! record included, whatever the tag.

use std::sync::LazyLock;

use crate::store::Shared;

/// The number of Redis Cluster hash slots.
const SLOTS: usize = 16384;

/// The characters of a tag: no brace, nothing a glob or a shell would read.
const ALPHABET: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_";

/// For each 14-bit value, a three-character tag whose CRC16 has it as its low 14
/// bits (three characters of 64 give 262,144 tags, which cover all 16,384 values).
///
/// The CRC is linear over texts of one length, so a tag's is the XOR of the CRCs of its
/// characters each in its place (the other two zero): 192 CRCs give all 262,144, and
/// the table costs milliseconds even in a debug build, inside the first lock call of a
/// process.
static TAGS: LazyLock<Vec<[u8; 3]>> = LazyLock::new(|| {
    let in_place = |place: usize| -> Vec<u16> {
        ALPHABET
            .iter()
            .map(|&character| {
                let mut text = [0; 3];
                text[place] = character;
                crc16(&text)
            })
            .collect()
    };
    let (first, second, third) = (in_place(0), in_place(1), in_place(2));
    let mut tags: Vec<Option<[u8; 3]>> = vec![None; SLOTS];
    for (&a, &crc_a) in ALPHABET.iter().zip(&first) {
        for (&b, &crc_b) in ALPHABET.iter().zip(&second) {
            for (&c, &crc_c) in ALPHABET.iter().zip(&third) {
                let entry = &mut tags[usize::from(crc_a ^ crc_b ^ crc_c) % SLOTS];
                if entry.is_none() {
                    *entry = Some([a, b, c]);
                }
            }
        }
    }
    tags.into_iter()
        .map(|tag| tag.expect("three characters of 64 cover every slot"))
        .collect()
});

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of `key`, as Redis Cluster computes it: the CRC16 of its hash tag
/// ([`crate::keys::hash_tag`]).
fn slot(key: &[u8]) -> usize {
    usize::from(crc16(crate::keys::hash_tag(key))) % SLOTS
}

/// The promotion record's key for a waiter line one of whose keys is `line_key`:
/// `{<ns>promoted}`, or under Redis Cluster `{<ns>promoted:<tag>}` in `line_key`'s
/// hash slot.
pub(crate) fn key(shared: &Shared, line_key: &str) -> String {
    let ns = shared.namespace();
    if shared.is_cluster() {
        key_in_slot(ns, slot(line_key.as_bytes()))
    } else {
        format!("{{{ns}promoted}}")
    }
}

/// `{<ns>promoted:<tag>}`, which hashes to `slot` (see the module docs).
fn key_in_slot(ns: &str, slot: usize) -> String {
    let base = format!("{ns}promoted:");
    let mut padded = base.clone().into_bytes();
    padded.extend_from_slice(&[0; 3]);
    let tag = &TAGS[(slot ^ usize::from(crc16(&padded))) % SLOTS];
    let tag = std::str::from_utf8(tag).expect("the alphabet is ASCII");
    format!("{{{base}{tag}}}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    #[test]
    fn the_checksum_is_redis_clusters() {
        // The check value of CRC16/XMODEM, and the example of the Redis Cluster spec.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        for key in [
            "foo",
            "{user1000}.following",
            "{}x",
            "a{b}c",
            "{ns:n}:lock:e:1.0",
        ] {
            assert_eq!(
                Slot::for_key(key),
                Slot::new(u16::try_from(slot(key.as_bytes())).unwrap()).unwrap(),
                "{key}"
            );
        }
    }

    #[test]
    fn every_tag_has_the_crc_of_its_entry() {
        for (value, tag) in TAGS.iter().enumerate() {
            assert_eq!(usize::from(crc16(tag)) % SLOTS, value, "{tag:?}");
        }
    }

    #[test]
    fn the_record_shares_the_slot_of_every_line() {
        for ns in ["distsync:", "cluster-test-x-1-2:", "", "ns{with:", "é/ü:"] {
            for n in 0..2000 {
                let line = format!("{{{ns}name{n}}}:lock:e:1.0");
                let record = key_in_slot(ns, slot(line.as_bytes()));
                assert!(record.starts_with(&format!("{{{ns}promoted:")), "{record}");
                assert_eq!(Slot::for_key(&record), Slot::for_key(&line), "{record}");
            }
        }
        // Every slot has its record.
        for wanted in 0..SLOTS {
            assert_eq!(slot(key_in_slot("distsync:", wanted).as_bytes()), wanted);
        }
    }

    #[test]
    fn a_namespace_with_a_closing_brace_keeps_the_record_with_its_lines() {
        let ns = "odd}ns:";
        let line = format!("{{{ns}name}}:lock:e:1.0");
        let record = key_in_slot(ns, slot(line.as_bytes()));
        assert_eq!(Slot::for_key(&record), Slot::for_key(&line));
    }
}
