//! The bytes of a queue node, in Curator's `ItemSerializer` format, which Curator's
//! `DistributedQueue` writes and reads: a node holds a `MultiItem` of one or more
//! items.
//!
//! ```text
//! version  i32, big-endian: 0x00010001
//! item     0x01, length (i32, big-endian, not negative), the item's bytes
//! ...      (one item per `put`, several per `putMulti`)
//! end      0x02
//! ```
//!
//! distsync writes one item per node; it reads any number (see `split` in the queue's
//! module for what it does with several).

use distsync_core::Bytes;

/// The format's version, the first four bytes.
const VERSION: u32 = 0x0001_0001;

/// The opcode before each item.
const ITEM: u8 = 0x01;

/// The opcode that ends the list.
const END: u8 = 0x02;

/// The node data of the single item `item`.
pub(crate) fn encode(item: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(item.len() + 10);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.push(ITEM);
    // ZooKeeper refuses nodes past its `jute.maxbuffer` (just under 1 MiB by default) long before
    // an item's length reaches `i32::MAX`: the store answers the create with an error.
    out.extend_from_slice(&i32::try_from(item.len()).unwrap_or(i32::MAX).to_be_bytes());
    out.extend_from_slice(item);
    out.push(END);
    out
}

/// Why a node's data is not Curator's format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

/// The items a node's data holds, in order.
///
/// # Errors
/// [`Malformed`] for data that is not in Curator's format (another version, a bad
/// opcode or length, or data that ends early).
pub(crate) fn decode(data: &[u8]) -> Result<Vec<Bytes>, Malformed> {
    let Some((version, mut rest)) = data.split_first_chunk::<4>() else {
        return Err(Malformed("shorter than its version"));
    };
    if u32::from_be_bytes(*version) != VERSION {
        return Err(Malformed("not version 0x00010001 of Curator's item format"));
    }
    let mut items = Vec::new();
    loop {
        let Some((&opcode, after)) = rest.split_first() else {
            return Err(Malformed("ends before its end opcode"));
        };
        match opcode {
            // Curator ignores whatever follows the end opcode, and so does this.
            END => return Ok(items),
            ITEM => {}
            _ => return Err(Malformed("an opcode other than item or end")),
        }
        let Some((length, after)) = after.split_first_chunk::<4>() else {
            return Err(Malformed("ends inside an item's length"));
        };
        let Ok(length) = usize::try_from(i32::from_be_bytes(*length)) else {
            return Err(Malformed("a negative item length"));
        };
        if after.len() < length {
            return Err(Malformed("ends inside an item"));
        }
        let (item, after) = after.split_at(length);
        items.push(Bytes::copy_from_slice(item));
        rest = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_item_round_trips_in_curators_bytes() {
        assert_eq!(
            encode(b"ab"),
            vec![0, 1, 0, 1, 1, 0, 0, 0, 2, b'a', b'b', 2]
        );
        for item in [&b""[..], b"\0\n\xff", b"plain"] {
            assert_eq!(
                decode(&encode(item)).unwrap(),
                vec![Bytes::copy_from_slice(item)]
            );
        }
    }

    #[test]
    fn several_items_decode_in_order() {
        let data = [0, 1, 0, 1, 1, 0, 0, 0, 1, b'x', 1, 0, 0, 0, 0, 2, b'?'];
        assert_eq!(
            decode(&data).unwrap(),
            vec![Bytes::from_static(b"x"), Bytes::new()]
        );
    }

    #[test]
    fn malformed_data_is_an_error_not_a_panic() {
        for data in [
            &b""[..],
            b"\0\x01\0",
            b"\0\x01\0\x02\x02",
            b"\0\x01\0\x01",
            b"\0\x01\0\x01\x03",
            b"\0\x01\0\x01\x01\0\0",
            b"\0\x01\0\x01\x01\xff\xff\xff\xff",
            b"\0\x01\0\x01\x01\0\0\0\x05ab",
        ] {
            assert!(decode(data).is_err(), "{data:?}");
        }
    }
}
