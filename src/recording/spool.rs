//! The spool of a live call: the growing WAV, encrypted and authenticated
//! at rest in records small enough that a crash loses at most the record
//! being filled (blocking I/O, format only; the recorder decides when to
//! seal).
//!
//! An age STREAM (what the final objects are) cannot seal a short chunk
//! except the last, so its 64 KiB chunks would put ~2 s of audio at risk.
//! The spool is therefore its own construction:
//!
//! ```text
//! "CSSPOOL1"                       8-byte magic
//! u32 LE n, n bytes                age file (to the tenant's recipient) of a
//!                                  random 32-byte spool key
//! records: u32 LE n, n bytes       ChaCha20-Poly1305(spool key,
//!                                    nonce = 0u32 ‖ index as u64 BE,
//!                                    aad = "callstream spool v1",
//!                                    plaintext ≤ MAX_RECORD_BYTES)
//! ```
//!
//! The spool key is fresh per spool, so counter nonces never repeat under
//! it; the record index is the nonce, so a record dropped, repeated or
//! moved fails to authenticate at its new place; the tag covers the
//! length, since a wrong length splits the ciphertext elsewhere. Only the
//! tenant's identity opens the spool key, as for the final object.
//!
//! Each sealed record goes to storage in one `write_all` (one write(2) on
//! local disk): after a kill -9 the page cache keeps every record written,
//! so no fsync per record is needed. The file can end inside a record only
//! where the process died mid-write; [`SpoolReader`] treats an incomplete
//! last record as never written (a clean end), and a complete record that
//! fails to authenticate as corruption (an error, never audio).

use std::io::{self, Read, Write};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

use super::storage::{ObjectRead, ObjectWriter, Storage, StorageError};
use super::RecordingError;

const MAGIC: &[u8; 8] = b"CSSPOOL1";
const AAD: &[u8] = b"callstream spool v1";
const TAG_BYTES: usize = 16;
/// The largest record plaintext: a bound for the reader (a length beyond
/// it is corruption, not a reason to allocate) and for the writer.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// The largest age file of a 32-byte key we accept (it is ~250 bytes).
const MAX_KEY_FILE: usize = 4096;

fn nonce(index: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&index.to_be_bytes());
    *Nonce::from_slice(&n)
}

/// Appends sealed records to a spool. Bytes given to [`write`](Self::write)
/// wait in memory until [`seal`](Self::seal) (or a full record) writes them.
pub struct SpoolWriter {
    out: Box<dyn ObjectWriter>,
    cipher: ChaCha20Poly1305,
    next_index: u64,
    pending: Zeroizing<Vec<u8>>,
    record_bytes: usize,
    plaintext: u64,
}

impl SpoolWriter {
    /// Starts a spool at `key` whose key is encrypted to `recipient`, and
    /// writes its header. Records hold at most `record_bytes` of plaintext.
    pub fn create(
        storage: &dyn Storage,
        key: &str,
        recipient: &age::x25519::Recipient,
        record_bytes: usize,
    ) -> Result<Self, RecordingError> {
        let mut spool_key = Zeroizing::new([0u8; 32]);
        rand::thread_rng().fill_bytes(spool_key.as_mut());
        let sealed_key = age::encrypt(recipient, spool_key.as_ref())
            .map_err(|e| RecordingError::Key(format!("cannot encrypt to the tenant key: {e}")))?;
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&(sealed_key.len() as u32).to_le_bytes());
        header.extend_from_slice(&sealed_key);
        let mut out = storage.create(key)?;
        out.write_all(&header).map_err(StorageError::from)?;
        Ok(Self {
            out,
            cipher: ChaCha20Poly1305::new(Key::from_slice(spool_key.as_ref())),
            next_index: 0,
            pending: Zeroizing::new(Vec::new()),
            record_bytes: record_bytes.clamp(1, MAX_RECORD_BYTES),
            plaintext: 0,
        })
    }

    /// Records from now on hold at most `record_bytes` (the recorder sets
    /// it from the sample rate once it knows it).
    pub fn set_record_bytes(&mut self, record_bytes: usize) {
        self.record_bytes = record_bytes.clamp(1, MAX_RECORD_BYTES);
    }

    /// Whether writing `n` more bytes fills a record (and so writes to
    /// storage, to be done off the async threads).
    pub fn writes_through(&self, n: usize) -> bool {
        self.pending.len() + n >= self.record_bytes
    }

    /// Plaintext bytes not yet sealed.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Takes `buf`, sealing every record it fills.
    pub fn write(&mut self, mut buf: &[u8]) -> Result<(), StorageError> {
        while !buf.is_empty() {
            let take = (self.record_bytes - self.pending.len()).min(buf.len());
            self.pending.extend_from_slice(&buf[..take]);
            self.plaintext += take as u64;
            buf = &buf[take..];
            if self.pending.len() == self.record_bytes {
                self.seal()?;
            }
        }
        Ok(())
    }

    /// Seals what is pending as one record and writes it (nothing when
    /// nothing is pending).
    pub fn seal(&mut self) -> Result<(), StorageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ct = self
            .cipher
            .encrypt(
                &nonce(self.next_index),
                Payload {
                    msg: &self.pending,
                    aad: AAD,
                },
            )
            .map_err(|_| StorageError::Io(io::Error::other("spool record encryption failed")))?;
        let mut record = Vec::with_capacity(4 + ct.len());
        record.extend_from_slice(&(ct.len() as u32).to_le_bytes());
        record.extend_from_slice(&ct);
        self.out.write_all(&record)?;
        self.next_index += 1;
        self.pending.clear();
        Ok(())
    }

    /// Plaintext bytes written so far, sealed or pending.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext
    }

    /// Seals what is pending. The spool stays partial (the finalised object
    /// replaces it, it is never committed itself); this releases it.
    pub fn finish(mut self) -> Result<(), StorageError> {
        self.seal()?;
        self.out.flush()?;
        Ok(())
    }
}

/// Reads a spool's plaintext: the records in order, ending cleanly where
/// the whole records end. A complete record that fails to authenticate is
/// an [`io::ErrorKind::InvalidData`] error.
pub struct SpoolReader {
    src: Box<dyn ObjectRead>,
    cipher: ChaCha20Poly1305,
    index: u64,
    buf: Zeroizing<Vec<u8>>,
    at: usize,
    ended: bool,
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` if the source ends first.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => return Ok(false),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl SpoolReader {
    /// Opens a spool. `Ok(None)`: its header is incomplete (the writer died
    /// before it was out), so there is nothing to recover.
    pub fn open(
        mut src: Box<dyn ObjectRead>,
        identity: &age::x25519::Identity,
    ) -> Result<Option<Self>, RecordingError> {
        let mut head = [0u8; 12];
        if !read_full(&mut src, &mut head).map_err(StorageError::from)? {
            return Ok(None);
        }
        if &head[..8] != MAGIC {
            return Err(RecordingError::Corrupt("not a callstream spool".into()));
        }
        let len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
        if len > MAX_KEY_FILE {
            return Err(RecordingError::Corrupt("spool key header too long".into()));
        }
        let mut sealed_key = vec![0u8; len];
        if !read_full(&mut src, &mut sealed_key).map_err(StorageError::from)? {
            return Ok(None);
        }
        let key = Zeroizing::new(age::decrypt(identity, &sealed_key).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys | age::DecryptError::KeyDecryptionFailed => {
                RecordingError::Key("the recording is not encrypted to this tenant key".into())
            }
            _ => RecordingError::Corrupt("spool key header is invalid".into()),
        })?);
        if key.len() != 32 {
            return Err(RecordingError::Corrupt(
                "spool key has the wrong size".into(),
            ));
        }
        Ok(Some(Self {
            src,
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            index: 0,
            buf: Zeroizing::new(Vec::new()),
            at: 0,
            ended: false,
        }))
    }

    /// Loads the next record into `buf`; `false` at the end.
    fn next_record(&mut self) -> io::Result<bool> {
        let corrupt = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let mut len = [0u8; 4];
        if !read_full(&mut self.src, &mut len)? {
            return Ok(false);
        }
        let len = u32::from_le_bytes(len) as usize;
        if !(TAG_BYTES + 1..=MAX_RECORD_BYTES + TAG_BYTES).contains(&len) {
            return Err(corrupt(format!(
                "spool record {} has an impossible length",
                self.index
            )));
        }
        let mut ct = vec![0u8; len];
        if !read_full(&mut self.src, &mut ct)? {
            return Ok(false); // torn: the writer died inside this record
        }
        let plain = self
            .cipher
            .decrypt(&nonce(self.index), Payload { msg: &ct, aad: AAD })
            .map_err(|_| corrupt(format!("spool record {} failed authentication", self.index)))?;
        self.index += 1;
        self.buf = Zeroizing::new(plain);
        self.at = 0;
        Ok(true)
    }

    /// Whole records read so far.
    pub fn records(&self) -> u64 {
        self.index
    }
}

impl Read for SpoolReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.buf.len() {
            if self.ended || out.is_empty() {
                return Ok(0);
            }
            if !self.next_record()? {
                self.ended = true;
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::storage::LocalStorage;

    fn read_all(
        storage: &LocalStorage,
        key: &str,
        id: &age::x25519::Identity,
    ) -> Result<Option<Vec<u8>>, RecordingError> {
        let Some(mut r) = SpoolReader::open(storage.open_partial(key)?, id)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out)
            .map_err(|e| RecordingError::Corrupt(e.to_string()))?;
        Ok(Some(out))
    }

    /// A spool of records of 1..=7 bytes, and where each record ends in the
    /// file (ciphertext offset) with the plaintext before that point.
    fn small_spool(
        storage: &LocalStorage,
        recipient: &age::x25519::Recipient,
    ) -> (Vec<u8>, Vec<(usize, usize)>) {
        let mut w = SpoolWriter::create(storage, "s", recipient, 5).unwrap();
        let plain: Vec<u8> = (0u8..23).collect();
        // Full records of 5, then short seals, as audio time and wall time
        // would make them.
        for piece in [&plain[..7], &plain[7..9], &plain[9..16], &plain[16..23]] {
            w.write(piece).unwrap();
            w.seal().unwrap();
        }
        w.finish().unwrap();
        let path = storage.partial_path("s").unwrap();
        let bytes = std::fs::read(&path).unwrap();
        // Walk the records to know each boundary and plaintext so far.
        let key_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        let mut at = 12 + key_len;
        let mut plain_at = 0;
        let mut ends = vec![(at, 0)];
        while at < bytes.len() {
            let n = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            at += 4 + n;
            plain_at += n - TAG_BYTES;
            ends.push((at, plain_at));
        }
        assert_eq!(plain_at, plain.len());
        (bytes, ends)
    }

    #[test]
    fn every_truncation_recovers_a_prefix_of_whole_records() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path()).unwrap();
        let id = age::x25519::Identity::generate();
        let (bytes, ends) = small_spool(&storage, &id.to_public());
        // 7 → 5+2, 2, 7 → 5+2, 7 → 5+2: seven records.
        assert_eq!(ends.len(), 8);
        let plain: Vec<u8> = (0u8..23).collect();
        let path = storage.partial_path("s").unwrap();
        for cut in 0..=bytes.len() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let got = read_all(&storage, "s", &id).unwrap();
            let whole = ends.iter().rev().find(|(end, _)| *end <= cut);
            match whole {
                None => assert_eq!(got, None, "cut {cut}: header incomplete"),
                Some((_, n)) => assert_eq!(got.as_deref(), Some(&plain[..*n]), "cut {cut}"),
            }
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_in_the_records_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path()).unwrap();
        let id = age::x25519::Identity::generate();
        let (bytes, ends) = small_spool(&storage, &id.to_public());
        let path = storage.partial_path("s").unwrap();
        let plain: Vec<u8> = (0u8..23).collect();
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            match read_all(&storage, "s", &id) {
                Err(_) => {}
                // A length prefix made longer reads as a record torn at the
                // end of the file: what precedes it, never altered bytes.
                Ok(Some(got)) => {
                    assert!(at >= ends[0].0, "header byte {at} flipped unnoticed");
                    assert!(
                        got.len() < plain.len() && plain.starts_with(&got),
                        "byte {at}"
                    );
                }
                Ok(None) => panic!("byte {at}: spool unreadable but no error"),
            }
        }
        // A record moved to another place fails (the index is the nonce).
        let (r1, r2) = (ends[1], ends[2]);
        let mut swapped = bytes[..r1.0].to_vec();
        swapped.extend_from_slice(&bytes[r1.0..r2.0]);
        swapped.extend_from_slice(&bytes[r1.0..r2.0]);
        std::fs::write(&path, &swapped).unwrap();
        assert!(read_all(&storage, "s", &id).is_err());
        // Another tenant's identity cannot open it.
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read_all(&storage, "s", &age::x25519::Identity::generate()),
            Err(RecordingError::Key(_))
        ));
    }
}
