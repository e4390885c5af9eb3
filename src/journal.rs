//! The question journal: every accepted question is on disk before the
//! broker's PUBACK goes out, and stays there until the broker has acknowledged
//! its reply, so neither a killed process nor a lost connection loses it.
//!
//! The file (`questions.journal` in the state folder) is a sequence of frames,
//! each `[version: u8][length: u32 LE][crc32: u32 LE][postcard record]`. It is
//! append-only: `Accepted` when a question is taken, `Done` when its reply
//! is acknowledged. At start it is read back: questions without `Done` are
//! answered again (or told they expired), and the keys of recent questions
//! (reply topic plus correlation data or id) catch a broker's redelivery of a
//! message already taken. A torn or corrupt tail (a crash mid-write, a bad
//! block) ends the reading with a log line and is cut off. When the file
//! outgrows its limit it is rewritten with only what is still needed.
//!
//! [`JournalState`] is the pure part (what the records mean); [`Journal`]
//! owns the file on its own thread and batches concurrent appends into one
//! fsync. When the disk fails (full, read-only, gone), questions are still
//! answered, without durability, and the failure is logged and shown in the
//! retained status until a write succeeds again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::protocol::{ReplyAddress, Request};

/// The frame format; bump it when [`Record`] changes incompatibly.
const VERSION: u8 = 1;
const HEADER: usize = 9;
/// No record is larger: questions, topics and ids are capped well below it.
const MAX_RECORD: usize = 1 << 20;
/// How many answered questions are remembered for catching redeliveries.
const REMEMBERED_KEYS: usize = 4096;
const FILE_NAME: &str = "questions.journal";
/// How often a failing disk is reported again while it keeps failing.
const REPORT_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal folder {0}: {1}")]
    Folder(PathBuf, std::io::Error),
    #[error("journal {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// An accepted question, as much of it as is needed to answer it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// Identifies a redelivery of the same message; None when the message
    /// carries neither an id nor correlation data.
    pub key: Option<Vec<u8>>,
    pub id: String,
    pub topic: String,
    pub question: String,
    pub reply_topic: String,
    pub correlation_data: Option<Vec<u8>>,
    pub max_tokens: Option<u32>,
    /// Wall-clock deadline, so it survives a restart.
    pub deadline_unix_ms: u64,
}

impl Entry {
    pub fn new(seq: u64, key: Option<Vec<u8>>, r: &Request, now: SystemTime) -> Self {
        Self {
            seq,
            key,
            id: r.id.clone(),
            topic: r.topic.clone(),
            question: r.question.clone(),
            reply_topic: r.reply.topic.clone(),
            correlation_data: r.reply.correlation_data.clone(),
            max_tokens: r.max_tokens,
            deadline_unix_ms: unix_ms(now) + r.deadline_ms,
        }
    }

    /// The request to answer now, or None when its deadline has passed.
    pub fn request(&self, now: SystemTime) -> Option<Request> {
        let left = self.deadline_unix_ms.checked_sub(unix_ms(now))?;
        (left > 0).then(|| Request {
            id: self.id.clone(),
            topic: self.topic.clone(),
            question: self.question.clone(),
            reply: self.reply_address(),
            max_tokens: self.max_tokens,
            deadline_ms: left,
            // Votes are never journaled (intake): their askers move on in seconds.
            vote: false,
        })
    }

    pub fn reply_address(&self) -> ReplyAddress {
        ReplyAddress {
            topic: self.reply_topic.clone(),
            correlation_data: self.correlation_data.clone(),
        }
    }
}

/// The key that recognises a redelivered message: the reply address plus the
/// correlation data (MQTT 5) or the asker's own id. None when there is neither,
/// as for a plain-text question: such a message cannot be told from a new one.
pub fn dedup_key(r: &Request, id_given: bool) -> Option<Vec<u8>> {
    let tail: &[u8] = match (&r.reply.correlation_data, id_given) {
        (Some(c), _) => c,
        (None, true) => r.id.as_bytes(),
        (None, false) => return None,
    };
    let mut key = Vec::with_capacity(r.reply.topic.len() + 1 + tail.len());
    key.extend_from_slice(r.reply.topic.as_bytes());
    key.push(0);
    key.extend_from_slice(tail);
    Some(key)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Record {
    Accepted(Entry),
    Done {
        seq: u64,
    },
    /// A key of an answered question, kept across a compaction.
    Seen {
        key: Vec<u8>,
    },
}

fn encode(record: &Record, out: &mut Vec<u8>) {
    let body = postcard::to_stdvec(record).expect("records serialise");
    out.push(VERSION);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// Why reading stopped before the end of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct BadTail {
    pub offset: u64,
    pub skipped_bytes: u64,
    pub reason: &'static str,
}

/// Reads frames until the end or the first bad one. Returns the records, the
/// length of the good prefix, and what was wrong after it.
fn decode_all(bytes: &[u8]) -> (Vec<Record>, usize, Option<BadTail>) {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let bad = |reason| BadTail {
            offset: at as u64,
            skipped_bytes: (bytes.len() - at) as u64,
            reason,
        };
        let rest = &bytes[at..];
        if rest.len() < HEADER {
            return (records, at, Some(bad("torn frame header")));
        }
        if rest[0] != VERSION {
            return (records, at, Some(bad("unknown frame version")));
        }
        let len = u32::from_le_bytes(rest[1..5].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(rest[5..9].try_into().unwrap());
        if len > MAX_RECORD {
            return (records, at, Some(bad("impossible record length")));
        }
        let Some(body) = rest.get(HEADER..HEADER + len) else {
            return (records, at, Some(bad("torn record")));
        };
        if crc32fast::hash(body) != crc {
            return (records, at, Some(bad("checksum mismatch")));
        }
        match postcard::from_bytes::<Record>(body) {
            Ok(r) => records.push(r),
            Err(_) => return (records, at, Some(bad("undecodable record"))),
        }
        at += HEADER + len;
    }
    (records, at, None)
}

/// What the records say: the questions still owed a reply and the keys seen.
#[derive(Debug, Default)]
pub struct JournalState {
    pending: BTreeMap<u64, Entry>,
    /// Key -> still pending?
    keys: HashMap<Vec<u8>, bool>,
    /// Keys of answered questions, oldest first, bounded.
    answered: VecDeque<Vec<u8>>,
    next_seq: u64,
}

/// The outcome of offering a question to the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// On disk; answer it and report `done(seq)` once the reply is acknowledged.
    New { seq: u64 },
    /// A redelivery of a question already taken (`pending`: still being
    /// answered) : acknowledge it and do nothing else.
    Duplicate { pending: bool },
    /// Taken, but the disk failed: answer it; it is lost if the process dies.
    Unjournaled,
}

impl JournalState {
    fn apply(&mut self, record: Record) {
        match record {
            Record::Accepted(e) => {
                self.next_seq = self.next_seq.max(e.seq + 1);
                if let Some(k) = &e.key {
                    self.keys.insert(k.clone(), true);
                }
                self.pending.insert(e.seq, e);
            }
            Record::Done { seq } => {
                if let Some(e) = self.pending.remove(&seq) {
                    if let Some(k) = e.key {
                        self.remember_answered(k);
                    }
                }
            }
            Record::Seen { key } => self.remember_answered(key),
        }
    }

    fn remember_answered(&mut self, key: Vec<u8>) {
        self.keys.insert(key.clone(), false);
        self.answered.push_back(key);
        while self.answered.len() > REMEMBERED_KEYS {
            let old = self.answered.pop_front().expect("not empty");
            // Only forget it if it was not taken again since.
            if self.keys.get(&old) == Some(&false) {
                self.keys.remove(&old);
            }
        }
    }

    /// Whether a key belongs to a question already taken: Some(pending).
    fn seen(&self, key: &[u8]) -> Option<bool> {
        self.keys.get(key).copied()
    }

    pub fn pending(&self) -> impl Iterator<Item = &Entry> {
        self.pending.values()
    }

    /// The records a compacted file needs: what is pending and the keys of
    /// recent answers.
    fn live_records(&self) -> Vec<Record> {
        let seen = self
            .answered
            .iter()
            .filter(|k| self.keys.get(*k) == Some(&false))
            .map(|k| Record::Seen { key: k.clone() });
        seen.chain(self.pending.values().cloned().map(Record::Accepted))
            .collect()
    }
}

/// Settings, from the `[journal]` config section.
#[derive(Debug, Clone)]
pub struct JournalSettings {
    pub dir: PathBuf,
    /// Rewrite the file once it is larger than this.
    pub max_bytes: u64,
}

/// The journal file, owned by the journal thread.
struct JournalFile {
    path: PathBuf,
    file: File,
    len: u64,
    max_bytes: u64,
}

impl JournalFile {
    /// Opens (or creates) the journal and reads it back.
    fn open(s: &JournalSettings) -> Result<(Self, JournalState), JournalError> {
        std::fs::create_dir_all(&s.dir).map_err(|e| JournalError::Folder(s.dir.clone(), e))?;
        let path = s.dir.join(FILE_NAME);
        let io = |e| JournalError::Io(path.clone(), e);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let (records, good, bad) = decode_all(&bytes);
        if let Some(bad) = bad {
            tracing::error!(
                path = %path.display(),
                offset = bad.offset,
                skipped_bytes = bad.skipped_bytes,
                reason = bad.reason,
                "journal has a torn or corrupt tail: skipped it (questions recorded there cannot be answered again)"
            );
            file.set_len(good as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let mut state = JournalState::default();
        for r in records {
            state.apply(r);
        }
        Ok((
            Self {
                path,
                file,
                len: good as u64,
                max_bytes: s.max_bytes,
            },
            state,
        ))
    }

    /// Appends and syncs the frames; on failure cuts back whatever part of
    /// them reached the file, so the next append starts on a frame boundary.
    fn append(&mut self, frames: &[u8], sync: bool) -> std::io::Result<()> {
        let result =
            self.file.write_all(frames).and_then(
                |()| {
                    if sync {
                        self.file.sync_data()
                    } else {
                        Ok(())
                    }
                },
            );
        match result {
            Ok(()) => {
                self.len += frames.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    /// Rewrites the file with only the live records (write a new file, sync,
    /// rename over the old one), when it has outgrown its limit.
    fn compact_if_large(&mut self, state: &JournalState) -> std::io::Result<()> {
        if self.len <= self.max_bytes {
            return Ok(());
        }
        let before = self.len;
        let mut bytes = Vec::new();
        for r in state.live_records() {
            encode(&r, &mut bytes);
        }
        let tmp = self.path.with_extension("journal.new");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.len = bytes.len() as u64;
        tracing::info!(
            before_bytes = before,
            after_bytes = self.len,
            "compacted the journal"
        );
        Ok(())
    }
}

enum Command {
    Admit {
        entry_for: Box<dyn FnOnce(u64) -> Entry + Send>,
        key: Option<Vec<u8>>,
        answer: oneshot::Sender<Admission>,
    },
    Done(u64),
}

/// The handle the stages use; the file lives on the journal's own thread.
#[derive(Clone)]
pub struct Journal {
    commands: mpsc::UnboundedSender<Command>,
}

impl Journal {
    /// Opens the journal and starts its thread. Returns the questions that
    /// were still owed a reply when the last run ended, oldest first, and a
    /// watch that is true while the disk accepts writes.
    pub fn start(
        s: &JournalSettings,
    ) -> Result<(Self, Vec<Entry>, watch::Receiver<bool>), JournalError> {
        let (file, state) = JournalFile::open(s)?;
        let owed: Vec<Entry> = state.pending().cloned().collect();
        tracing::info!(
            path = %file.path.display(),
            bytes = file.len,
            owed = owed.len(),
            "journal opened"
        );
        let (commands, rx) = mpsc::unbounded_channel();
        let (healthy_tx, healthy) = watch::channel(true);
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || journal_thread(file, state, rx, healthy_tx))
            .map_err(|e| JournalError::Io(s.dir.clone(), e))?;
        Ok((Self { commands }, owed, healthy))
    }

    /// Records a question before it is acknowledged to the broker.
    pub async fn admit(&self, request: &Request, key: Option<Vec<u8>>) -> Admission {
        let (answer, answered) = oneshot::channel();
        let request = request.clone();
        let entry_key = key.clone();
        let command = Command::Admit {
            entry_for: Box::new(move |seq| Entry::new(seq, entry_key, &request, SystemTime::now())),
            key,
            answer,
        };
        if self.commands.send(command).is_err() {
            return Admission::Unjournaled;
        }
        answered.await.unwrap_or(Admission::Unjournaled)
    }

    /// The reply to question `seq` was acknowledged by the broker.
    pub fn done(&self, seq: u64) {
        let _ = self.commands.send(Command::Done(seq));
    }
}

fn journal_thread(
    mut file: JournalFile,
    mut state: JournalState,
    mut commands: mpsc::UnboundedReceiver<Command>,
    healthy: watch::Sender<bool>,
) {
    let mut last_report: Option<std::time::Instant> = None;
    while let Some(first) = commands.blocking_recv() {
        // Group commit: everything already waiting goes into one write and sync.
        let mut batch = vec![first];
        while let Ok(c) = commands.try_recv() {
            batch.push(c);
        }
        let mut frames = Vec::new();
        let mut admitted = Vec::new();
        let mut records = Vec::new();
        for command in batch {
            match command {
                Command::Admit {
                    entry_for,
                    key,
                    answer,
                } => {
                    if let Some(pending) = key.as_deref().and_then(|k| state.seen(k)) {
                        let _ = answer.send(Admission::Duplicate { pending });
                        continue;
                    }
                    let seq = state.next_seq;
                    state.next_seq += 1;
                    let record = Record::Accepted(entry_for(seq));
                    encode(&record, &mut frames);
                    // Applied now so a redelivery in the same batch is caught.
                    state.apply(record.clone());
                    records.push(record);
                    admitted.push((seq, answer));
                }
                Command::Done(seq) => {
                    if state.pending.contains_key(&seq) {
                        let record = Record::Done { seq };
                        encode(&record, &mut frames);
                        state.apply(record.clone());
                        records.push(record);
                    }
                }
            }
        }
        if frames.is_empty() {
            continue;
        }
        // Only a new question needs the sync before its PUBACK; a lost `Done`
        // means one answer too many after a crash, never one too few.
        let sync = !admitted.is_empty();
        match file.append(&frames, sync) {
            Ok(()) => {
                if !*healthy.borrow() {
                    tracing::warn!(path = %file.path.display(), "journal writable again: questions are durable again");
                    healthy.send_replace(true);
                    last_report = None;
                }
                for (seq, answer) in admitted {
                    let _ = answer.send(Admission::New { seq });
                }
                if let Err(e) = file.compact_if_large(&state) {
                    tracing::error!(path = %file.path.display(), error = %e, "cannot compact the journal");
                }
            }
            Err(e) => {
                // The questions are answered anyway; forget them here so the
                // state matches the file.
                for r in records {
                    if let Record::Accepted(e) = r {
                        state.pending.remove(&e.seq);
                        if let Some(k) = e.key {
                            state.keys.remove(&k);
                        }
                    }
                }
                if last_report.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
                    tracing::error!(
                        path = %file.path.display(),
                        error = %e,
                        "JOURNAL WRITE FAILED: questions are answered but not durable; a crash now loses them"
                    );
                    last_report = Some(std::time::Instant::now());
                }
                healthy.send_replace(false);
                for (_, answer) in admitted {
                    let _ = answer.send(Admission::Unjournaled);
                }
            }
        }
    }
    let _ = file.file.sync_all();
    tracing::debug!("journal thread stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    fn request(id: &str, corr: Option<&[u8]>) -> Request {
        Request {
            id: id.into(),
            topic: "swarm/query/line1".into(),
            question: format!("question {id}"),
            reply: ReplyAddress {
                topic: "swarm/reply/line1".into(),
                correlation_data: corr.map(|c| c.to_vec()),
            },
            max_tokens: Some(16),
            deadline_ms: 30_000,
            vote: false,
        }
    }

    fn settings(dir: &Path, max_bytes: u64) -> JournalSettings {
        JournalSettings {
            dir: dir.to_path_buf(),
            max_bytes,
        }
    }

    fn frames(records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            encode(r, &mut out);
        }
        out
    }

    fn accepted(seq: u64, id: &str) -> Record {
        let r = request(id, None);
        Record::Accepted(Entry::new(seq, dedup_key(&r, true), &r, UNIX_EPOCH))
    }

    #[test]
    fn frames_round_trip() {
        let records = vec![
            accepted(0, "a"),
            accepted(1, "b"),
            Record::Done { seq: 0 },
            Record::Seen { key: b"k".to_vec() },
        ];
        let bytes = frames(&records);
        let (back, good, bad) = decode_all(&bytes);
        assert_eq!(back, records);
        assert_eq!(good, bytes.len());
        assert_eq!(bad, None);
    }

    #[test]
    fn a_torn_tail_is_detected_at_every_cut() {
        let bytes = frames(&[accepted(0, "a"), accepted(1, "b")]);
        let first = frames(&[accepted(0, "a")]).len();
        for cut in first + 1..bytes.len() {
            let (back, good, bad) = decode_all(&bytes[..cut]);
            assert_eq!(back.len(), 1, "cut at {cut}");
            assert_eq!(good, first);
            assert_eq!(bad.unwrap().skipped_bytes, (cut - first) as u64);
        }
    }

    #[test]
    fn a_flipped_bit_is_caught_by_the_checksum() {
        let mut bytes = frames(&[accepted(0, "a"), accepted(1, "b")]);
        let last = bytes.len() - 3;
        bytes[last] ^= 0x10;
        let (back, _, bad) = decode_all(&bytes);
        assert_eq!(back.len(), 1);
        assert_eq!(bad.unwrap().reason, "checksum mismatch");
    }

    #[test]
    fn state_tracks_pending_and_answered_keys() {
        let mut s = JournalState::default();
        s.apply(accepted(0, "a"));
        s.apply(accepted(1, "b"));
        s.apply(Record::Done { seq: 0 });
        let key_a = dedup_key(&request("a", None), true).unwrap();
        let key_b = dedup_key(&request("b", None), true).unwrap();
        assert_eq!(s.seen(&key_a), Some(false));
        assert_eq!(s.seen(&key_b), Some(true));
        assert_eq!(s.pending().map(|e| e.seq).collect::<Vec<_>>(), vec![1]);
        assert_eq!(s.next_seq, 2);
    }

    #[test]
    fn dedup_key_needs_correlation_data_or_an_id() {
        let with_corr = request("x", Some(b"c1"));
        assert_eq!(
            dedup_key(&with_corr, false).unwrap(),
            b"swarm/reply/line1\0c1".to_vec()
        );
        assert_eq!(dedup_key(&request("x", None), false), None);
        assert_ne!(
            dedup_key(&request("x", None), true),
            dedup_key(&request("y", None), true)
        );
    }

    #[test]
    fn an_expired_entry_gives_no_request() {
        let r = request("a", None);
        let now = SystemTime::now();
        let e = Entry::new(0, None, &r, now);
        assert_eq!(e.request(now).unwrap().deadline_ms, 30_000);
        assert!(e.request(now + Duration::from_secs(31)).is_none());
    }

    #[test]
    fn compaction_keeps_pending_questions_and_recent_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1_000);
        let (mut file, mut state) = JournalFile::open(&s).unwrap();
        let mut appended = 0;
        for seq in 0..40 {
            let r = accepted(seq, &format!("q{seq}"));
            let mut bytes = frames(std::slice::from_ref(&r));
            state.apply(r);
            if seq % 2 == 0 {
                encode(&Record::Done { seq }, &mut bytes);
                state.apply(Record::Done { seq });
            }
            appended += bytes.len() as u64;
            file.append(&bytes, false).unwrap();
            file.compact_if_large(&state).unwrap();
        }
        let live = frames(&state.live_records()).len() as u64;
        assert!(appended > live + 1_000, "the test must outgrow the limit");
        assert!(
            file.len < live + 1_000,
            "compacted to {} of {appended}",
            file.len
        );
        drop(file);
        let (_, back) = JournalFile::open(&s).unwrap();
        let pending: Vec<u64> = back.pending().map(|e| e.seq).collect();
        assert_eq!(pending, (0..40).filter(|s| s % 2 == 1).collect::<Vec<_>>());
        let answered = dedup_key(&request("q38", None), true).unwrap();
        assert_eq!(back.seen(&answered), Some(false));
        assert_eq!(back.next_seq, 40);
    }

    #[test]
    fn reopening_cuts_a_torn_tail_and_appends_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20);
        let path = dir.path().join(FILE_NAME);
        let mut bytes = frames(&[accepted(0, "a"), accepted(1, "b")]);
        let whole = bytes.len();
        bytes.truncate(whole - 4);
        std::fs::write(&path, &bytes).unwrap();
        let (mut file, state) = JournalFile::open(&s).unwrap();
        assert_eq!(state.pending().count(), 1);
        file.append(&frames(&[accepted(2, "c")]), true).unwrap();
        drop(file);
        let (_, state) = JournalFile::open(&s).unwrap();
        let seqs: Vec<u64> = state.pending().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![0, 2]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_thread_admits_dedups_and_replays() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20);
        let (j, owed, healthy) = Journal::start(&s).unwrap();
        assert!(owed.is_empty());
        let a = request("a", Some(b"c-a"));
        let b = request("b", None);
        let key_a = dedup_key(&a, true);
        let Admission::New { seq: sa } = j.admit(&a, key_a.clone()).await else {
            panic!("not admitted")
        };
        assert_eq!(
            j.admit(&a, key_a.clone()).await,
            Admission::Duplicate { pending: true }
        );
        let Admission::New { seq: sb } = j.admit(&b, None).await else {
            panic!("not admitted")
        };
        // No key: a second copy cannot be recognised and is taken again.
        assert!(matches!(j.admit(&b, None).await, Admission::New { .. }));
        j.done(sa);
        assert_eq!(
            j.admit(&a, key_a.clone()).await,
            Admission::Duplicate { pending: false }
        );
        assert!(*healthy.borrow());
        drop(j);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, owed, _) = Journal::start(&s).unwrap();
        let ids: Vec<_> = owed.iter().map(|e| (e.seq, e.id.as_str())).collect();
        assert_eq!(ids, vec![(sb, "b"), (sb + 1, "b")]);
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let (records, good, bad) = decode_all(&bytes);
            prop_assert!(good <= bytes.len());
            prop_assert_eq!(bad.is_none(), good == bytes.len());
            prop_assert!(records.len() <= bytes.len() / HEADER);
        }

        #[test]
        fn any_prefix_of_a_journal_reads_back_a_prefix_of_its_records(
            n in 1usize..8, cut in any::<prop::sample::Index>()
        ) {
            let records: Vec<Record> = (0..n as u64).map(|s| accepted(s, &format!("q{s}"))).collect();
            let bytes = frames(&records);
            let cut = cut.index(bytes.len() + 1);
            let (back, _, _) = decode_all(&bytes[..cut]);
            prop_assert_eq!(&back[..], &records[..back.len()]);
        }
    }
}
