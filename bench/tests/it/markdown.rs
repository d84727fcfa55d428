//! The notes under a table keep docs/' line limit.

use distsync_bench::markdown::{list_item, NOTE_WIDTH};

#[test]
fn a_long_note_is_wrapped_into_an_indented_list_item() {
    let note = "zookeeper / Curator 5.4 InterProcessMutex (acquire + release, timed in the warmed-up JVM) \
                with 64 clients: not run: a JVM per client, run with up to 8 clients (--contended-jvm-clients)";
    let item = list_item(note, NOTE_WIDTH);
    let lines: Vec<&str> = item.lines().collect();
    assert!(lines.len() > 1, "{item}");
    assert!(lines[0].starts_with("- zookeeper"), "{item}");
    for line in &lines {
        assert!(line.chars().count() <= NOTE_WIDTH, "{line:?}");
    }
    for line in &lines[1..] {
        assert!(
            line.starts_with("  ") && !line.starts_with("   "),
            "{line:?}"
        );
    }
    let words: Vec<&str> = item.split_whitespace().collect();
    let mut expected = vec!["-"];
    expected.extend(note.split_whitespace());
    assert_eq!(words, expected);
}

#[test]
fn a_short_note_stays_on_one_line() {
    assert_eq!(list_item("etcd: fine", NOTE_WIDTH), "- etcd: fine\n");
}
