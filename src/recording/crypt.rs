//! Encrypted recording objects in the age format (blocking I/O).
//!
//! A live call is written as a *spool* ([`super::spool`]): the WAV, with a
//! header carrying placeholder sizes, in records sealed at least every
//! second of audio, never holding plaintext on disk.
//!
//! A WAV header needs the sizes, which are known only at the end, so the
//! spool is then *finalised*: decrypted (streaming, never fully in memory)
//! and re-encrypted as an age file under a fresh file key into the final
//! object with the right header, committed atomically, and the spool
//! deleted. The same path recovers a spool a crashed process left: the
//! whole records decrypt and authenticate, a torn last one is dropped, and
//! everything before it becomes a valid, finalised file. The cost is one
//! extra decrypt+encrypt pass per call; the gain is that every stored
//! recording is a plain age file of a standard WAV (`age -d` then any
//! player), read with HTTP Range through age's seekable 64 KiB chunks.
//!
//! What a crash can lose is therefore the record being filled (see
//! `recorder` for how often records are sealed) plus what the interleaver
//! holds back while one track waits for the other (`interleave`).

use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};

use super::spool::SpoolReader;

use age::stream::StreamReader;

use super::storage::{ObjectRead, Storage, StorageError};
use super::wav;
use super::RecordingError;

/// Plaintext bytes per age STREAM chunk (of final objects).
pub const CHUNK_BYTES: u64 = 64 * 1024;

fn encryptor(recipient: &age::x25519::Recipient) -> Result<age::Encryptor, RecordingError> {
    age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
        .map_err(|e| RecordingError::Key(format!("cannot encrypt to the tenant key: {e}")))
}

/// What a finalised recording turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finalised {
    pub channels: u16,
    pub sample_rate: u32,
    /// Sample bytes (after the 44-byte header).
    pub data_bytes: u64,
    /// Ciphertext bytes of the final object.
    pub stored_bytes: u64,
}

impl Finalised {
    /// Size of the decrypted WAV.
    pub fn wav_bytes(&self) -> u64 {
        wav::HEADER_LEN as u64 + self.data_bytes
    }

    pub fn duration_ms(&self) -> u64 {
        let byte_rate = u64::from(self.sample_rate) * u64::from(self.channels) * 2;
        (self.data_bytes * 1000).checked_div(byte_rate).unwrap_or(0)
    }
}

/// A decrypting reader over a stored object.
type AgeReader = StreamReader<BufReader<Box<dyn ObjectRead>>>;

/// Opens an age stream for reading. `Ok(None)`: the age header itself is
/// incomplete (a writer died before it was out), i.e. nothing to recover.
fn open_age(
    obj: Box<dyn ObjectRead>,
    identity: &age::x25519::Identity,
) -> Result<Option<AgeReader>, RecordingError> {
    let decryptor = match age::Decryptor::new_buffered(BufReader::new(obj)) {
        Ok(d) => d,
        Err(age::DecryptError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(None)
        }
        Err(e) => return Err(decrypt_error(e)),
    };
    decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map(Some)
        .map_err(decrypt_error)
}

fn decrypt_error(e: age::DecryptError) -> RecordingError {
    match e {
        age::DecryptError::NoMatchingKeys | age::DecryptError::KeyDecryptionFailed => {
            RecordingError::Key("the recording is not encrypted to this tenant key".into())
        }
        age::DecryptError::Io(e) => RecordingError::Storage(StorageError::Io(e)),
        other => RecordingError::Corrupt(format!("invalid age header: {other}")),
    }
}

/// Whether a read error means "the ciphertext ends or fails to
/// authenticate here" (as opposed to storage failing).
fn is_torn(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
    )
}

/// Turns the spool at `spool_key` into the final object at `final_key`
/// (see the module docs) and deletes the spool.
///
/// `data_bytes`: the sample bytes the writer knows it wrote (normal end),
/// or `None` to take every complete authenticated chunk (crash recovery).
/// `fallback` is the (channels, rate) for a spool too short to hold its
/// own header.
pub fn finalise(
    storage: &dyn Storage,
    spool_key: &str,
    final_key: &str,
    identity: &age::x25519::Identity,
    recipient: &age::x25519::Recipient,
    data_bytes: Option<u64>,
    fallback: (u16, u32),
) -> Result<Finalised, RecordingError> {
    // Pass 1: the format from the placeholder header, and (recovery) how
    // much authenticates.
    let (channels, sample_rate, data_len) = {
        let mut header = [0u8; wav::HEADER_LEN];
        let reader = SpoolReader::open(storage.open_partial(spool_key)?, identity)?;
        match reader {
            None => (fallback.0, fallback.1, 0),
            Some(mut r) => {
                let got = read_spool(&mut r, &mut header)?;
                if got < wav::HEADER_LEN {
                    (fallback.0, fallback.1, 0)
                } else {
                    let info = wav::parse(&header, u64::MAX).map_err(|e| {
                        RecordingError::Corrupt(format!("spool header is not ours: {e}"))
                    })?;
                    let len = match data_bytes {
                        Some(n) => n,
                        None => count_spool(&mut r)?,
                    };
                    let block = u64::from(info.block_align);
                    (info.channels, info.sample_rate, len - len % block)
                }
            }
        }
    };
    let data_u32 = u32::try_from(data_len)
        .ok()
        .filter(|n| *n <= u32::MAX - 36)
        .ok_or_else(|| RecordingError::Corrupt("recording exceeds the WAV size limit".into()))?;

    // Pass 2: re-encrypt under a fresh file key with the real header.
    let mut out = encryptor(recipient)?
        .wrap_output(storage.create(final_key)?)
        .map_err(StorageError::from)?;
    let copied = (|| -> Result<u64, RecordingError> {
        out.write_all(&wav::pcm16_header(channels, sample_rate, data_u32))
            .map_err(StorageError::from)?;
        if data_len == 0 {
            return Ok(0);
        }
        let Some(mut r) = SpoolReader::open(storage.open_partial(spool_key)?, identity)? else {
            return Ok(0);
        };
        let mut skip = [0u8; wav::HEADER_LEN];
        read_spool(&mut r, &mut skip)?;
        copy_exact(&mut r, &mut out, data_len)
    })();
    let finished = match copied {
        Ok(n) if n == data_len => out.finish().map_err(|e| StorageError::from(e).into()),
        Ok(n) => Err(RecordingError::Corrupt(format!(
            "spool holds {n} audio bytes, {data_len} were written"
        ))),
        Err(e) => Err(e),
    };
    let writer = match finished {
        Ok(w) => w,
        Err(e) => {
            // The final object was never committed; drop its partial.
            let _ = storage.delete(final_key);
            return Err(e);
        }
    };
    let stored_bytes = writer.commit()?;
    storage.delete(spool_key)?;
    Ok(Finalised {
        channels,
        sample_rate,
        data_bytes: data_len,
        stored_bytes,
    })
}

/// A spool read error: a record failing authentication is corruption
/// (never served or kept as audio), anything else is storage failing.
fn spool_error(e: io::Error) -> RecordingError {
    if e.kind() == io::ErrorKind::InvalidData {
        RecordingError::Corrupt(e.to_string())
    } else {
        RecordingError::Storage(StorageError::Io(e))
    }
}

/// Reads from the spool until `buf` is full or its whole records end.
fn read_spool(r: &mut SpoolReader, buf: &mut [u8]) -> Result<usize, RecordingError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(spool_error(e)),
        }
    }
    Ok(n)
}

/// Plaintext bytes in the rest of the spool's whole records.
fn count_spool(r: &mut SpoolReader) -> Result<u64, RecordingError> {
    io::copy(r, &mut io::sink()).map_err(spool_error)
}

fn copy_exact(r: &mut SpoolReader, w: &mut impl Write, len: u64) -> Result<u64, RecordingError> {
    let mut buf = vec![0u8; CHUNK_BYTES as usize];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = read_spool(r, &mut buf[..want])?;
        w.write_all(&buf[..n]).map_err(StorageError::from)?;
        left -= n as u64;
        if n < want {
            break;
        }
    }
    Ok(len - left)
}

/// Encrypts a complete WAV from `source` into a committed object at `key`.
/// Returns (the WAV's format, plaintext bytes, ciphertext bytes). The
/// source is checked to be a WAV before anything is committed.
pub fn store_wav(
    storage: &dyn Storage,
    key: &str,
    recipient: &age::x25519::Recipient,
    mut source: impl Read,
) -> Result<(wav::WavInfo, u64, u64), RecordingError> {
    const PREFIX: usize = 64 * 1024;
    let mut out = encryptor(recipient)?
        .wrap_output(storage.create(key)?)
        .map_err(StorageError::from)?;
    let result = (|| -> Result<(Vec<u8>, u64), RecordingError> {
        let mut prefix = Vec::with_capacity(PREFIX);
        let mut buf = vec![0u8; CHUNK_BYTES as usize];
        let mut total = 0u64;
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(RecordingError::Source(e)),
            };
            if prefix.len() < PREFIX {
                let take = n.min(PREFIX - prefix.len());
                prefix.extend_from_slice(&buf[..take]);
            }
            out.write_all(&buf[..n]).map_err(StorageError::from)?;
            total += n as u64;
        }
        Ok((prefix, total))
    })();
    let checked = result.and_then(|(prefix, total)| {
        let info = wav::parse(&prefix, total).map_err(RecordingError::InvalidWav)?;
        Ok((info, total))
    });
    match checked {
        Ok((info, total)) => {
            let writer = match out.finish() {
                Ok(w) => w,
                Err(e) => {
                    let _ = storage.delete(key);
                    return Err(StorageError::from(e).into());
                }
            };
            let stored = writer.commit()?;
            Ok((info, total, stored))
        }
        Err(e) => {
            drop(out);
            let _ = storage.delete(key);
            Err(e)
        }
    }
}

/// A stored recording, decrypted as it is read: the WAV's plaintext as
/// `Read + Seek`. A seek decrypts only the 64 KiB chunk it lands in, so
/// HTTP ranges cost their own size, not the offset. Opening authenticates
/// the last chunk (a truncated file fails here); every chunk is
/// authenticated before any of its bytes are returned, so a tampered file
/// yields an error, never altered audio.
pub struct WavReader {
    inner: AgeReader,
    len: u64,
}

impl WavReader {
    pub fn open(
        obj: Box<dyn ObjectRead>,
        identity: &age::x25519::Identity,
    ) -> Result<Self, RecordingError> {
        let mut inner = open_age(obj, identity)?
            .ok_or_else(|| RecordingError::Corrupt("age header is truncated".into()))?;
        let len = inner.seek(SeekFrom::End(0)).map_err(corrupt_or_io)?;
        inner.seek(SeekFrom::Start(0)).map_err(corrupt_or_io)?;
        Ok(Self { inner, len })
    }

    /// Size of the decrypted WAV.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn corrupt_or_io(e: io::Error) -> RecordingError {
    if is_torn(&e) {
        RecordingError::Corrupt("ciphertext failed authentication (truncated or tampered)".into())
    } else {
        RecordingError::Storage(StorageError::Io(e))
    }
}

/// Read errors keep their kind; authentication failures say so plainly.
fn reader_error(e: io::Error) -> io::Error {
    if is_torn(&e) {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "recording ciphertext failed authentication (truncated or tampered)",
        )
    } else {
        e
    }
}

impl Read for WavReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(reader_error)
    }
}

impl Seek for WavReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos).map_err(reader_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::spool::SpoolWriter;
    use crate::recording::storage::LocalStorage;

    fn setup() -> (
        tempfile::TempDir,
        LocalStorage,
        age::x25519::Identity,
        age::x25519::Recipient,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path()).unwrap();
        let id = age::x25519::Identity::generate();
        let r = id.to_public();
        (dir, storage, id, r)
    }

    /// Stereo frames whose samples encode their own position.
    fn audio(frames: usize) -> Vec<u8> {
        (0..frames)
            .flat_map(|i| {
                let l = (i % 30_000) as i16;
                let r = -l;
                [l.to_le_bytes(), r.to_le_bytes()].concat()
            })
            .collect()
    }

    /// Plaintext per spool record in these tests (half a second of 8 kHz
    /// stereo).
    const RECORD: u64 = 16_000;

    fn spool_with(storage: &LocalStorage, r: &age::x25519::Recipient, data: &[u8]) -> SpoolWriter {
        let mut w = SpoolWriter::create(storage, "t/x.spool", r, RECORD as usize).unwrap();
        w.write(&wav::pcm16_header(2, 8000, u32::MAX)).unwrap();
        for piece in data.chunks(640) {
            w.write(piece).unwrap();
        }
        w
    }

    fn decrypt_all(storage: &LocalStorage, key: &str, id: &age::x25519::Identity) -> Vec<u8> {
        let mut r = WavReader::open(storage.open(key).unwrap(), id).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out.len() as u64, r.len());
        out
    }

    #[test]
    fn spool_finalises_into_a_wav_hound_reads() {
        let (_d, s, id, r) = setup();
        let data = audio(40_000); // 160 000 bytes: several chunks
        let w = spool_with(&s, &r, &data);
        w.finish().unwrap();
        let f = finalise(
            &s,
            "t/x.spool",
            "t/x.wav.age",
            &id,
            &r,
            Some(data.len() as u64),
            (2, 8000),
        )
        .unwrap();
        assert_eq!(f.data_bytes, data.len() as u64);
        assert_eq!(f.duration_ms(), 5_000);
        let wav_bytes = decrypt_all(&s, "t/x.wav.age", &id);
        assert_eq!(&wav_bytes[44..], &data[..]);
        let mut h = hound::WavReader::new(io::Cursor::new(&wav_bytes)).unwrap();
        assert_eq!(h.spec().channels, 2);
        assert_eq!(h.samples::<i16>().count(), 80_000);
        // The spool is gone, the final object is all that is left.
        let left: Vec<_> = s.list("").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(left, ["t/x.wav.age"]);
    }

    #[test]
    fn a_torn_spool_recovers_every_complete_record() {
        let (_d, s, id, r) = setup();
        let data = audio(50_000); // 200 044 plaintext bytes
        let w = spool_with(&s, &r, &data);
        let written = w.plaintext_len();
        drop(w); // killed: the record being filled never reached storage
        let f = finalise(&s, "t/x.spool", "t/x.wav.age", &id, &r, None, (2, 8000)).unwrap();
        let complete = written / RECORD * RECORD;
        assert_eq!(f.data_bytes, complete - 44);
        assert!(written - (f.data_bytes + 44) < RECORD);
        let wav_bytes = decrypt_all(&s, "t/x.wav.age", &id);
        assert_eq!(&wav_bytes[44..], &data[..f.data_bytes as usize]);

        // A torn write inside a record (part of it on disk) is cut too.
        let w = spool_with(&s, &r, &data);
        drop(w);
        let path = s.root().join("t/x.spool.partial");
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 1000).unwrap();
        let f = finalise(&s, "t/x.spool", "t/y.wav.age", &id, &r, None, (2, 8000)).unwrap();
        assert_eq!(f.data_bytes, complete - RECORD - 44);

        // A flipped byte in a whole record: corrupt, no object made.
        let w = spool_with(&s, &r, &data);
        drop(w);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = finalise(&s, "t/x.spool", "t/z.wav.age", &id, &r, None, (2, 8000)).unwrap_err();
        assert!(matches!(err, RecordingError::Corrupt(_)), "{err}");
        assert!(s.open("t/z.wav.age").is_err());
    }

    #[test]
    fn a_spool_without_even_a_header_finalises_empty() {
        let (_d, s, id, r) = setup();
        drop(s.create("t/x.spool").unwrap());
        let f = finalise(&s, "t/x.spool", "t/x.wav.age", &id, &r, None, (2, 8000)).unwrap();
        assert_eq!((f.data_bytes, f.channels, f.sample_rate), (0, 2, 8000));
        let wav_bytes = decrypt_all(&s, "t/x.wav.age", &id);
        assert_eq!(wav_bytes.len(), 44);
    }

    #[test]
    fn seeks_read_the_right_slices() {
        let (_d, s, id, r) = setup();
        let data = audio(70_000);
        spool_with(&s, &r, &data).finish().unwrap();
        finalise(
            &s,
            "t/x.spool",
            "t/x.wav.age",
            &id,
            &r,
            Some(data.len() as u64),
            (2, 8000),
        )
        .unwrap();
        let mut whole = pcm_file(&data);
        let mut rd = WavReader::open(s.open("t/x.wav.age").unwrap(), &id).unwrap();
        for (start, len) in [
            (0u64, 44usize),
            (65_530, 20),
            (200_000, 70_000),
            (280_000, 44),
        ] {
            rd.seek(SeekFrom::Start(start)).unwrap();
            let mut got = vec![0; len];
            rd.read_exact(&mut got).unwrap();
            assert_eq!(got, whole[start as usize..start as usize + len]);
        }
        whole.truncate(0);
    }

    fn pcm_file(data: &[u8]) -> Vec<u8> {
        let mut f = wav::pcm16_header(2, 8000, data.len() as u32).to_vec();
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn tampered_or_truncated_ciphertext_is_an_error_never_audio() {
        let (_d, s, id, r) = setup();
        let data = audio(40_000);
        spool_with(&s, &r, &data).finish().unwrap();
        finalise(
            &s,
            "t/x.spool",
            "t/x.wav.age",
            &id,
            &r,
            Some(data.len() as u64),
            (2, 8000),
        )
        .unwrap();
        let path = s.root().join("t/x.wav.age");
        let good = std::fs::read(&path).unwrap();
        // age header + nonce, before the first chunk (3 chunks of 16-byte tags).
        let header_len = good.len() - (data.len() + 44 + 3 * 16);
        let sealed_chunk = CHUNK_BYTES as usize + 16;

        // One bit flipped in the second chunk: the first chunk reads, then
        // an error; no byte of the altered chunk comes out.
        let mut bad = good.clone();
        bad[header_len + sealed_chunk + 100] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let mut rd = WavReader::open(s.open("t/x.wav.age").unwrap(), &id).unwrap();
        let mut out = Vec::new();
        let err = rd.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("authentication"), "{err}");
        assert_eq!(out.len() as u64, CHUNK_BYTES);
        assert_eq!(out[..], pcm_file(&data)[..out.len()]);

        // Truncated: refused at open, with a clear message.
        std::fs::write(&path, &good[..good.len() - 10]).unwrap();
        let err = WavReader::open(s.open("t/x.wav.age").unwrap(), &id)
            .err()
            .unwrap();
        assert!(matches!(err, RecordingError::Corrupt(_)), "{err}");
        // Cut at a chunk boundary too.
        std::fs::write(&path, &good[..header_len + sealed_chunk]).unwrap();
        assert!(WavReader::open(s.open("t/x.wav.age").unwrap(), &id).is_err());

        // Not an age file at all.
        std::fs::write(&path, b"RIFF....WAVE").unwrap();
        assert!(WavReader::open(s.open("t/x.wav.age").unwrap(), &id).is_err());

        // Another key.
        std::fs::write(&path, &good).unwrap();
        let other = age::x25519::Identity::generate();
        let err = WavReader::open(s.open("t/x.wav.age").unwrap(), &other)
            .err()
            .unwrap();
        assert!(matches!(err, RecordingError::Key(_)), "{err}");
    }

    #[test]
    fn complete_wavs_are_stored_as_they_are() {
        let (_d, s, id, r) = setup();
        let wav_bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/media-fixtures/jfk-8k-ulaw.wav"
        ))
        .unwrap();
        let (info, plain, stored) = store_wav(&s, "t/p.wav.age", &r, &wav_bytes[..]).unwrap();
        assert_eq!(plain, wav_bytes.len() as u64);
        assert!(stored > plain);
        assert_eq!(
            (info.channels, info.sample_rate, info.format_tag),
            (1, 8000, 7)
        );
        assert_eq!(decrypt_all(&s, "t/p.wav.age", &id), wav_bytes);
        // Not a WAV: nothing is left behind.
        let err = store_wav(&s, "t/q.wav.age", &r, &b"<html>nope</html>"[..]).unwrap_err();
        assert!(matches!(err, RecordingError::InvalidWav(_)), "{err}");
        assert!(s.list("t").unwrap().iter().all(|o| o.key == "t/p.wav.age"));
    }

    #[test]
    fn readers_and_writers_cross_threads() {
        use crate::recording::spool::SpoolReader;
        fn _reader_is_send(r: SpoolReader) -> impl Send {
            r
        }
        fn send<T: Send + 'static>() {}
        send::<WavReader>();
        send::<SpoolWriter>();
    }

    #[test]
    fn writes_through_predicts_record_io() {
        let (_d, s, _id, r) = setup();
        let mut w = SpoolWriter::create(&s, "t/z.spool", &r, RECORD as usize).unwrap();
        let path = s.root().join("t/z.spool.partial");
        let header = std::fs::metadata(&path).unwrap().len();
        w.write(&vec![0; RECORD as usize - 10]).unwrap();
        assert!(!w.writes_through(9));
        w.write(&[0; 9]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), header);
        assert!(w.writes_through(1));
        w.write(&[0; 1]).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            header + 4 + RECORD + 16
        );
        // A short record when asked (the wall-clock seal).
        w.write(&[0; 3]).unwrap();
        assert_eq!(w.pending_len(), 3);
        w.seal().unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            header + 2 * (4 + 16) + RECORD + 3
        );
    }
}
