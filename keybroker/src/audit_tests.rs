#![allow(clippy::unwrap_used)]

use super::*;
use std::sync::Arc;

fn entry(n: usize) -> Entry {
    Entry {
        time: format!("2026-11-28T00:00:{n:02}Z"),
        client: "127.0.0.1:1".into(),
        event: "resource",
        resource: Some("default/model-key/demo#v1".into()),
        decision: "release",
        reasons: vec![],
        evidence_sha256: None,
        platform: Some("snp".into()),
        measurement: None,
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn corrupt_line(path: &Path) -> (u64, String) {
    match verify(path) {
        Err(AuditError::Corrupt { line, message, .. }) => (line, message),
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

#[test]
fn the_chain_links_every_entry_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    for n in 0..3 {
        log.append(&entry(n)).unwrap();
    }
    let written = log.chain().unwrap();
    drop(log);
    assert_eq!(verify(&path).unwrap(), written);
    assert_eq!(written.entries, 3);
    let l = lines(&path);
    let first: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
    assert_eq!(first["prev"], GENESIS);
    let second: serde_json::Value = serde_json::from_str(&l[1]).unwrap();
    assert_eq!(second["prev"], line_hash(l[0].as_bytes()));
    assert_eq!(written.head, line_hash(l[2].as_bytes()));
    // Reopened, the log continues the same chain.
    let log = AuditLog::open(&path).unwrap();
    log.append(&entry(3)).unwrap();
    drop(log);
    assert_eq!(verify(&path).unwrap().entries, 4);
}

#[test]
fn edits_insertions_deletions_and_torn_writes_are_found_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    for n in 0..4 {
        log.append(&entry(n)).unwrap();
    }
    drop(log);
    let good = lines(&path);
    let write = |l: &[String], tail: &str| {
        std::fs::write(&path, format!("{}\n{tail}", l.join("\n"))).unwrap()
    };

    // A decision rewritten in place: the next line no longer links.
    let mut edited = good.clone();
    edited[1] = edited[1].replace("release", "deny");
    write(&edited, "");
    assert_eq!(corrupt_line(&path).0, 3);

    // An entry removed.
    let mut removed = good.clone();
    removed.remove(1);
    write(&removed, "");
    assert_eq!(corrupt_line(&path).0, 2);

    // An entry inserted (a copy of another).
    let mut inserted = good.clone();
    inserted.insert(2, good[0].clone());
    write(&inserted, "");
    assert_eq!(corrupt_line(&path).0, 3);

    // A torn last write.
    write(&good, "{\"time\":");
    let (line, message) = corrupt_line(&path);
    assert_eq!(line, 5);
    assert!(message.contains("torn write"), "{message}");

    // Not JSON at all.
    write(&good[..1], "garbage\n");
    let (line, message) = corrupt_line(&path);
    assert_eq!(line, 2);
    assert!(message.contains("not JSON"), "{message}");

    // The broker refuses to open a broken log rather than append to it.
    assert!(matches!(
        AuditLog::open(&path),
        Err(AuditError::Corrupt { line: 2, .. })
    ));

    // And it is not fooled by a device posing as a log.
    assert!(matches!(
        verify(Path::new("/dev/zero")),
        Err(AuditError::Io { .. })
    ));
}

/// A disk with `room` bytes left: a write that does not fit writes what
/// fits and fails with ENOSPC, as a real file system does.
struct SmallDisk {
    bytes: Arc<Mutex<Vec<u8>>>,
    room: Arc<Mutex<usize>>,
    truncate_fails: bool,
}

impl AuditSink for SmallDisk {
    fn append_durably(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut room = self.room.lock().unwrap();
        let fits = data.len().min(*room);
        self.bytes.lock().unwrap().extend_from_slice(&data[..fits]);
        *room -= fits;
        if fits < data.len() {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        if self.truncate_fails {
            return Err(std::io::Error::other("read-only file system"));
        }
        let mut b = self.bytes.lock().unwrap();
        let freed = b.len() - len as usize;
        b.truncate(len as usize);
        *self.room.lock().unwrap() += freed;
        Ok(())
    }
}

/// What a [`SmallDisk`] holds, and how much room it has left.
type Shared<T> = Arc<Mutex<T>>;

fn small_disk(room: usize, truncate_fails: bool) -> (AuditLog, Shared<Vec<u8>>, Shared<usize>) {
    let bytes = Arc::new(Mutex::new(Vec::new()));
    let room = Arc::new(Mutex::new(room));
    let sink = SmallDisk {
        bytes: bytes.clone(),
        room: room.clone(),
        truncate_fails,
    };
    let empty = Chain {
        entries: 0,
        len: 0,
        head: GENESIS.into(),
    };
    let log = AuditLog::with_sink(Path::new("small-disk"), Box::new(sink), empty);
    (log, bytes, room)
}

#[test]
fn a_full_disk_fails_the_append_and_leaves_a_verifiable_log() {
    let line_len = serde_json::to_vec(&Line {
        entry: &entry(0),
        prev: GENESIS,
    })
    .unwrap()
    .len()
        + 1;
    // Room for one entry and half of the next.
    let (log, bytes, room) = small_disk(line_len + line_len / 2, false);
    log.append(&entry(0)).unwrap();
    let err = log.append(&entry(1)).unwrap_err();
    assert!(err.to_string().contains("small-disk"), "{err}");
    assert_eq!(log.chain().unwrap().entries, 1);
    // The half-written line is gone; what is left verifies.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.jsonl");
    std::fs::write(&copy, bytes.lock().unwrap().as_slice()).unwrap();
    assert_eq!(verify(&copy).unwrap(), log.chain().unwrap());
    // Space freed: appending resumes on the same chain.
    *room.lock().unwrap() += 10 * line_len;
    log.append(&entry(1)).unwrap();
    std::fs::write(&copy, bytes.lock().unwrap().as_slice()).unwrap();
    assert_eq!(verify(&copy).unwrap().entries, 2);
}

#[test]
fn a_failed_rollback_refuses_every_later_append() {
    let (log, _, room) = small_disk(10, true);
    assert!(matches!(log.append(&entry(0)), Err(AuditError::Io { .. })));
    *room.lock().unwrap() += 1 << 20;
    assert!(matches!(
        log.append(&entry(1)),
        Err(AuditError::Poisoned { .. })
    ));
}

#[test]
fn a_snapshot_is_what_the_broker_wrote_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    for n in 0..3 {
        log.append(&entry(n)).unwrap();
    }
    let written = std::fs::read(&path).unwrap();
    assert_eq!(log.snapshot().unwrap(), written);
    // Bytes past what the log knows (an append in progress) are left out.
    let mut longer = written.clone();
    longer.extend_from_slice(b"{\"half\":");
    std::fs::write(&path, &longer).unwrap();
    assert_eq!(log.snapshot().unwrap(), written);
    // The same length, an entry edited: refused, not served — the first
    // (its successor's link breaks) and the last (which no link covers,
    // but the head this log holds does).
    let text = String::from_utf8(written).unwrap();
    for (edited, says) in [
        (
            text.replacen("00:00Z", "00:09Z", 1),
            "edited, inserted or removed",
        ),
        (text.replacen("00:02Z", "00:09Z", 1), "changed behind it"),
    ] {
        assert_ne!(edited, text);
        std::fs::write(&path, edited).unwrap();
        match log.snapshot() {
            Err(AuditError::Corrupt { message, .. }) => {
                assert!(message.contains(says), "{message}")
            }
            other => panic!("an edited log was served: {other:?}"),
        }
    }
}
