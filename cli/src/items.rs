//! Queue items on the command line and on standard input and output, in one of three
//! encodings, so that any bytes (not UTF-8, with newlines or NULs) survive a round trip
//! through `queue push` and `queue pop`/`receive` where the encoding allows it.
//!
//! - `text`: an item is a line. Items are written as their bytes followed by `\n`, and
//!   read one per line (`\n` ends an item, nothing else is stripped), so an item holding
//!   `\n` does not survive: use one of the other two for arbitrary items.
//! - `json`: an item is one JSON value, a string when the item is UTF-8 (`"a\nb"`), else
//!   `{"base64": "<standard base64 with padding>"}`. Written one per line; read as a
//!   stream of values separated by whitespace (one per line is the usual form). Any
//!   item survives.
//! - `null` (`-0`): an item is its raw bytes followed by NUL (`\0`), as `find -print0`
//!   and `xargs -0` have it. Read: NUL ends an item; a last item without one counts.
//!   Any item without a NUL survives.

use std::ffi::OsStr;
use std::io::{self, Write};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use clap::ValueEnum;
use distsync::Bytes;
use serde_json::Value;

/// How items are written and read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Encoding {
    /// One item per line (bytes as they are, `\n`-terminated).
    Text,
    /// One JSON value per line: a string, or `{"base64": "..."}` when not UTF-8.
    Json,
    /// Raw bytes, NUL-terminated (also `-0`).
    Null,
}

/// Writes `item` in `encoding`, with its terminator.
///
/// # Errors
/// The writer's error; [`io::ErrorKind::InvalidData`], before writing anything, for an
/// item holding a NUL in `null`, which would read back as two items.
pub(crate) fn write(out: &mut impl Write, item: &[u8], encoding: Encoding) -> io::Result<()> {
    match encoding {
        Encoding::Text => {
            out.write_all(item)?;
            out.write_all(b"\n")
        }
        Encoding::Json => {
            out.write_all(to_json(item).to_string().as_bytes())?;
            out.write_all(b"\n")
        }
        Encoding::Null if item.contains(&0) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the item holds a NUL byte, which -0 cannot delimit (use --format json)",
        )),
        Encoding::Null => {
            out.write_all(item)?;
            out.write_all(b"\0")
        }
    }
}

/// The item an ITEM argument names: its bytes, or (`json`) the item its JSON value
/// encodes.
///
/// # Errors
/// A message for an argument that is not one JSON item.
pub(crate) fn from_arg(arg: &OsStr, encoding: Encoding) -> Result<Bytes, String> {
    let bytes = arg.as_encoded_bytes();
    match encoding {
        Encoding::Text | Encoding::Null => Ok(Bytes::copy_from_slice(bytes)),
        Encoding::Json => {
            let value: Value = serde_json::from_slice(bytes)
                .map_err(|error| format!("ITEM is not JSON: {error}"))?;
            from_json(&value)
        }
    }
}

/// Every item in `input` (all of standard input), in order.
///
/// # Errors
/// A message naming the first value that is not a JSON item (`json` only).
pub(crate) fn from_input(input: &[u8], encoding: Encoding) -> Result<Vec<Bytes>, String> {
    match encoding {
        Encoding::Text => Ok(split(input, b'\n')),
        Encoding::Null => Ok(split(input, b'\0')),
        Encoding::Json => serde_json::Deserializer::from_slice(input)
            .into_iter::<Value>()
            .enumerate()
            .map(|(index, value)| {
                let value = value.map_err(|error| {
                    format!("item {} of standard input is not JSON: {error}", index + 1)
                })?;
                from_json(&value)
                    .map_err(|error| format!("item {} of standard input: {error}", index + 1))
            })
            .collect(),
    }
}

/// `input` cut after each `terminator`; a last piece without one counts, an empty one
/// does not (so `a\nb\n` and `a\nb` are both two items).
fn split(input: &[u8], terminator: u8) -> Vec<Bytes> {
    let mut items: Vec<Bytes> = input
        .split(|&byte| byte == terminator)
        .map(Bytes::copy_from_slice)
        .collect();
    // `split` yields an empty last piece after a final terminator, and one for empty input.
    if items.last().is_some_and(|last| last.is_empty()) {
        items.pop();
    }
    items
}

/// An item as JSON: a string when it is UTF-8, else `{"base64": ...}`.
pub(crate) fn to_json(item: &[u8]) -> Value {
    match std::str::from_utf8(item) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => serde_json::json!({ "base64": STANDARD.encode(item) }),
    }
}

/// The item a JSON value encodes (see [`to_json`]).
///
/// # Errors
/// A message for any other value.
pub(crate) fn from_json(value: &Value) -> Result<Bytes, String> {
    match value {
        Value::String(text) => Ok(Bytes::from(text.clone())),
        Value::Object(fields) if fields.len() == 1 => match fields.get("base64") {
            Some(Value::String(encoded)) => STANDARD
                .decode(encoded)
                .map(Bytes::from)
                .map_err(|error| format!("bad base64: {error}")),
            _ => Err(not_an_item(value)),
        },
        _ => Err(not_an_item(value)),
    }
}

fn not_an_item(value: &Value) -> String {
    let mut shown: String = value.to_string().chars().take(61).collect();
    if shown.chars().count() > 60 {
        shown = shown.chars().take(57).chain("...".chars()).collect();
    }
    format!("{shown} is neither a JSON string nor {{\"base64\": \"...\"}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte value alone, every byte value in one item, a newline, a NUL-free
    /// item that is not UTF-8, and text.
    fn awkward_items() -> Vec<Bytes> {
        let mut items: Vec<Bytes> = (0..=255u8).map(|byte| Bytes::from(vec![byte])).collect();
        items.push((0..=255u8).collect::<Vec<_>>().into());
        items.push(Bytes::from_static(b"line one\nline two\n"));
        items.push(Bytes::from_static(&[0xff, 0xfe, b'\n', 0x80]));
        items.push(Bytes::from_static("plain \u{e9}t\u{e9}".as_bytes()));
        items
    }

    fn encode_all(items: &[Bytes], encoding: Encoding) -> Vec<u8> {
        let mut out = Vec::new();
        for item in items {
            write(&mut out, item, encoding).unwrap();
        }
        out
    }

    #[test]
    fn json_keeps_every_item() {
        let items = awkward_items();
        let encoded = encode_all(&items, Encoding::Json);
        assert_eq!(from_input(&encoded, Encoding::Json).unwrap(), items);
        // One line per item: the encoding never holds a raw newline.
        assert_eq!(
            encoded.iter().filter(|&&byte| byte == b'\n').count(),
            items.len()
        );
    }

    #[test]
    fn null_keeps_every_item_without_a_nul() {
        let items: Vec<Bytes> = awkward_items()
            .into_iter()
            .filter(|item| !item.contains(&0))
            .collect();
        let encoded = encode_all(&items, Encoding::Null);
        assert_eq!(from_input(&encoded, Encoding::Null).unwrap(), items);
        let mut out = Vec::new();
        let error = write(&mut out, b"a\0b", Encoding::Null).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(out.is_empty(), "nothing written: {out:?}");
    }

    #[test]
    fn json_is_a_string_when_it_can_be() {
        assert_eq!(to_json(b"a\nb").to_string(), r#""a\nb""#);
        assert_eq!(to_json(&[0xff]).to_string(), r#"{"base64":"/w=="}"#);
        let arg = OsStr::new(r#"{"base64": "AAEK"}"#);
        assert_eq!(
            from_arg(arg, Encoding::Json).unwrap(),
            Bytes::from_static(&[0, 1, b'\n'])
        );
        for bad in [
            "7",
            "null",
            r#"{"base64": 1}"#,
            r#"{"base64": "!"}"#,
            "[\"a\"]",
        ] {
            assert!(from_arg(OsStr::new(bad), Encoding::Json).is_err(), "{bad}");
        }
    }

    #[test]
    fn lines_and_nul_terminated_input_split_as_documented() {
        let two = vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")];
        assert_eq!(from_input(b"a\nb\n", Encoding::Text).unwrap(), two);
        assert_eq!(from_input(b"a\nb", Encoding::Text).unwrap(), two);
        assert_eq!(from_input(b"a\0b", Encoding::Null).unwrap(), two);
        assert_eq!(
            from_input(b"a\n\nb\n", Encoding::Text).unwrap().len(),
            3,
            "an empty line is an empty item"
        );
        assert!(from_input(b"", Encoding::Text).unwrap().is_empty());
        assert!(from_input(b" \n", Encoding::Json).unwrap().is_empty());
        let error = from_input(b"\"a\"\n{\"x\":1}\n", Encoding::Json).unwrap_err();
        assert!(error.contains("item 2"), "{error}");
    }

    /// The round trip through the `memory://` store the binary uses: what `push` reads
    /// is stored, and what `pop` writes of it reads back as the same bytes.
    #[tokio::test]
    async fn awkward_items_survive_the_memory_store() {
        let coordinator = distsync::connect("memory://").await.unwrap();
        for encoding in [Encoding::Json, Encoding::Null] {
            let items: Vec<Bytes> = awkward_items()
                .into_iter()
                .filter(|item| encoding == Encoding::Json || !item.contains(&0))
                .collect();
            let queue = coordinator.queue(&format!("items-{encoding:?}")).unwrap();
            for item in from_input(&encode_all(&items, encoding), encoding).unwrap() {
                queue.enqueue(item).await.unwrap();
            }
            let mut out = Vec::new();
            while let Some(item) = queue.try_dequeue().await.unwrap() {
                write(&mut out, &item, encoding).unwrap();
            }
            assert_eq!(from_input(&out, encoding).unwrap(), items, "{encoding:?}");
        }
    }
}
