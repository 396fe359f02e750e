//! Where each remote-write target is in the raw journal, kept durably at
//! almost no cost: as a note appended to the journal itself (its last page
//! is written at every flush anyway) and restated at the start of every
//! segment, so the newest segment, which is never deleted, holds the
//! latest. A note is a few dozen bytes; the exporter saves at most one
//! every few seconds.
//!
//! Body: `CUR1`, then per target its name's length (one byte), the name,
//! and the last batch it acknowledged (u64, little-endian).

use crate::error::{Error, Result};
use crate::journal::{self, HEADER, NOTE};
use std::collections::BTreeMap;
use std::path::Path;

const TAG: &[u8; 4] = b"CUR1";

/// Target name -> the last batch it acknowledged.
pub type Cursors = BTreeMap<String, u64>;

pub fn encode(cursors: &Cursors) -> Result<Vec<u8>> {
    let mut out = TAG.to_vec();
    for (name, seq) in cursors {
        let len = u8::try_from(name.len())
            .map_err(|_| Error::invalid_input("a cursor name is at most 255 bytes"))?;
        out.push(len);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
    }
    Ok(out)
}

fn decode(body: &[u8]) -> Option<Cursors> {
    let mut rest = body.strip_prefix(TAG)?;
    let mut out = Cursors::new();
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        let name = std::str::from_utf8(tail.get(..len)?).ok()?;
        let seq = u64::from_le_bytes(tail.get(len..len + 8)?.try_into().ok()?);
        out.insert(name.to_string(), seq);
        rest = &tail[len + 8..];
    }
    Some(out)
}

/// The latest cursors saved in the journal in `dir` (empty when none):
/// the last note of the newest segment that has one.
pub fn latest(dir: &Path) -> Result<Cursors> {
    for (_, path) in journal::list(dir)?.into_iter().rev() {
        let bytes = match journal::segment_bytes(&path, false) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        let mut found = None;
        let mut pos = 0usize;
        // Whole records only: the newest may end in one being written.
        while let journal::Next::Record(head, body) = journal::next_record(&bytes[pos..]) {
            if head.count == NOTE
                && let Some(c) = decode(body)
            {
                found = Some(c);
            }
            pos += HEADER + head.body;
        }
        if let Some(c) = found {
            return Ok(c);
        }
    }
    Ok(Cursors::new())
}

impl crate::Store {
    /// Saves remote-write cursors in the raw journal (through the writer,
    /// after every point queued before the call): a note of a few dozen
    /// bytes, restated at the start of each new segment.
    pub fn save_cursors(&self, cursors: &Cursors) -> Result<()> {
        let body = encode(cursors)?;
        self.inner.queue.run(move |reply| {
            crate::queue::Job::Run(Box::new(move |w: &mut crate::writer::Writer| {
                let _ = reply.send(w.append_note(&body));
            }))
        })
    }

    /// The cursors saved last (empty when none, or for an in-memory store).
    pub fn saved_cursors(&self) -> Result<Cursors> {
        match self.inner.location.path() {
            Some(path) => latest(&journal::dir_of(path)),
            None => Ok(Cursors::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let mut c = Cursors::new();
        c.insert("vm".into(), 42);
        c.insert("mimir-eu".into(), u64::MAX - 1);
        assert_eq!(decode(&encode(&c).unwrap()).unwrap(), c);
        assert_eq!(
            decode(&encode(&Cursors::new()).unwrap()).unwrap(),
            Cursors::new()
        );
        assert!(decode(b"XXXX").is_none());
        assert!(encode(&[("x".repeat(300), 1)].into_iter().collect()).is_err());
    }
}
