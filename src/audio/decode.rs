//! Audio files → 16 kHz mono `f32`, the input Whisper takes.
//!
//! WAV, FLAC, MP3 and Ogg Vorbis go through symphonia. symphonia 0.5 demuxes
//! Ogg Opus but has no Opus decoder, so Ogg streams whose first packet is an
//! `OpusHead` are demuxed with the `ogg` crate and decoded by libopus
//! (audiopus) at 48 kHz, honouring the header's pre-skip, output gain and the
//! end trim given by the last granule position (RFC 7845).
//!
//! Input bytes are untrusted: every failure is a [`DecodeError`], and a panic
//! inside a third-party decoder is caught and reported as corrupt data rather
//! than taking the process down.

use std::io::{Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::media::resample::StreamResampler;

/// Output rate of every decode: what Whisper expects.
pub const TARGET_RATE: u32 = 16_000;

/// Longest audio we decode. A few bytes of FLAC can describe hours of
/// silence; at 16 kHz `f32` this bounds the output to about 920 MB.
pub const MAX_DURATION_SECS: u64 = 4 * 3600;

/// Opus always decodes at 48 kHz here (RFC 7845 §5.1: the header's "input
/// sample rate" is informational only).
const OPUS_RATE: u32 = 48_000;
/// Largest Opus packet duration, 120 ms at 48 kHz, per channel.
const OPUS_MAX_FRAME: usize = 5_760;

/// Why a file could not be turned into audio.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot read file: {0}")]
    Io(#[from] std::io::Error),
    /// A container, codec or parameter we do not handle.
    #[error("unsupported audio: {0}")]
    Unsupported(String),
    /// The bytes claim a known format but do not decode.
    #[error("corrupt audio data: {0}")]
    Corrupt(String),
    /// The file decodes but holds no samples.
    #[error("no audio in file")]
    Empty,
    /// Longer than [`MAX_DURATION_SECS`].
    #[error("audio longer than {} hours", MAX_DURATION_SECS / 3600)]
    TooLong,
}

/// Decoded audio plus what we learned about the source.
#[derive(Debug, Clone)]
pub struct DecodedAudio {
    /// Mono (channels averaged), [`TARGET_RATE`] Hz, in [-1, 1].
    pub samples: Vec<f32>,
    /// Codec short name, e.g. `pcm_s16le`, `mp3`, `vorbis`, `opus`.
    pub codec: String,
    /// Source rate in Hz (the first one, should it change mid-stream).
    pub source_rate: u32,
    pub source_channels: usize,
    /// Packets that failed to decode and were skipped (lossy streams with
    /// glitches still transcribe; callers may warn).
    pub damaged_packets: usize,
    /// The stream ended before its header said it would.
    pub truncated: bool,
}

impl DecodedAudio {
    pub fn duration_ms(&self) -> u64 {
        self.samples.len() as u64 * 1000 / u64::from(TARGET_RATE)
    }
}

/// Decodes a file; its extension is only a hint, the content decides.
pub fn decode_file(path: &Path) -> Result<DecodedAudio, DecodeError> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(DecodeError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    if meta.len() == 0 {
        return Err(DecodeError::Empty);
    }
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_owned);
    guarded(|| decode_source(file, ext.as_deref()))
}

/// Decodes in-memory bytes; `ext` (without the dot) is a format hint.
pub fn decode_bytes(bytes: Vec<u8>, ext: Option<&str>) -> Result<DecodedAudio, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    guarded(|| decode_source(std::io::Cursor::new(bytes), ext))
}

/// Turns a panic in a decoder into [`DecodeError::Corrupt`].
fn guarded(
    f: impl FnOnce() -> Result<DecodedAudio, DecodeError>,
) -> Result<DecodedAudio, DecodeError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(DecodeError::Corrupt(
            "the decoder failed on this input".into(),
        ))
    })
}

fn decode_source<S: MediaSource + 'static>(
    mut src: S,
    ext: Option<&str>,
) -> Result<DecodedAudio, DecodeError> {
    let mut magic = [0u8; 4];
    let is_ogg = src.read_exact(&mut magic).is_ok() && &magic == b"OggS";
    src.seek(SeekFrom::Start(0))?;
    if is_ogg {
        let mut reader = ogg::PacketReader::new(src);
        if let Ok(Some(first)) = reader.read_packet() {
            if first.data.starts_with(b"OpusHead") {
                return decode_ogg_opus(reader, first);
            }
        }
        src = reader.into_inner();
        src.seek(SeekFrom::Start(0))?;
    }
    decode_symphonia(src, ext)
}

/// Accumulates decoded interleaved audio as 16 kHz mono.
struct Sink {
    resampler: Option<StreamResampler>,
    out: Vec<f32>,
    mono: Vec<f32>,
    first_rate: Option<u32>,
    channels: usize,
    /// Output samples not yet counted against [`MAX_DURATION_SECS`].
    limit: usize,
}

impl Sink {
    fn new() -> Self {
        Self {
            resampler: None,
            out: Vec::new(),
            mono: Vec::new(),
            first_rate: None,
            channels: 0,
            limit: (MAX_DURATION_SECS * u64::from(TARGET_RATE)) as usize,
        }
    }

    /// Appends interleaved `samples` with `channels` channels at `rate` Hz.
    fn push(&mut self, samples: &[f32], channels: usize, rate: u32) -> Result<(), DecodeError> {
        if channels == 0 {
            return Err(DecodeError::Corrupt("stream with zero channels".into()));
        }
        self.first_rate.get_or_insert(rate);
        if self.channels == 0 {
            self.channels = channels;
        }
        if self.resampler.as_ref().map(|r| r.input_rate()) != Some(rate) {
            // A rate change mid-stream (chained Ogg, broken MP3): finish the
            // old stream, start a new converter.
            if let Some(mut old) = self.resampler.take() {
                old.flush(&mut self.out);
            }
            self.resampler = Some(
                StreamResampler::new(rate, TARGET_RATE)
                    .map_err(|_| DecodeError::Unsupported(format!("sample rate {rate} Hz")))?,
            );
        }
        self.mono.clear();
        let scale = 1.0 / channels as f32;
        self.mono
            .extend(samples.chunks_exact(channels).map(|frame| {
                let s = frame.iter().sum::<f32>() * scale;
                // Float sources can carry NaN or overs; Whisper wants [-1, 1].
                if s.is_finite() {
                    s.clamp(-1.0, 1.0)
                } else {
                    0.0
                }
            }));
        if let Some(r) = &mut self.resampler {
            r.process(&self.mono, &mut self.out);
        }
        if self.out.len() > self.limit {
            return Err(DecodeError::TooLong);
        }
        Ok(())
    }

    fn finish(
        mut self,
        codec: String,
        damaged_packets: usize,
        truncated: bool,
    ) -> Result<DecodedAudio, DecodeError> {
        if let Some(r) = &mut self.resampler {
            r.flush(&mut self.out);
        }
        if self.out.is_empty() {
            return Err(DecodeError::Empty);
        }
        for s in &mut self.out {
            *s = s.clamp(-1.0, 1.0);
        }
        Ok(DecodedAudio {
            samples: self.out,
            codec,
            source_rate: self.first_rate.unwrap_or(TARGET_RATE),
            source_channels: self.channels,
            damaged_packets,
            truncated,
        })
    }
}

fn decode_symphonia<S: MediaSource + 'static>(
    src: S,
    ext: Option<&str>,
) -> Result<DecodedAudio, DecodeError> {
    let mss = MediaSourceStream::new(Box::new(src), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = ext {
        hint.with_extension(ext);
    }
    let format_opts = FormatOptions {
        // Trims MP3 encoder delay and padding so times match the source.
        enable_gapless: true,
        ..Default::default()
    };
    let probed = symphonia::default::get_probe()
        .format(&hint, mss, &format_opts, &MetadataOptions::default())
        .map_err(|e| match e {
            SymphoniaError::Unsupported(_) => DecodeError::Unsupported(
                "not a recognised audio format (WAV, FLAC, MP3, Ogg Vorbis, Ogg Opus)".into(),
            ),
            SymphoniaError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                DecodeError::Corrupt("file ends inside its header".into())
            }
            other => DecodeError::Corrupt(other.to_string()),
        })?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| DecodeError::Unsupported("no audio track".into()))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let registry = symphonia::default::get_codecs();
    let codec = registry.get_codec(params.codec).map_or_else(
        || format!("{:?}", params.codec),
        |d| d.short_name.to_owned(),
    );
    let mut decoder = registry
        .make(&params, &DecoderOptions::default())
        .map_err(|_| DecodeError::Unsupported(format!("codec {codec}")))?;

    let mut sink = Sink::new();
    let mut buf: Option<SampleBuffer<f32>> = None;
    let (mut decoded_packets, mut damaged, mut frames) = (0usize, 0usize, 0u64);
    let mut truncated = false;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            // How every symphonia reader signals the end of the stream.
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break
            }
            Err(SymphoniaError::ResetRequired) => {
                decoder.reset();
                continue;
            }
            // Damage in the container after some audio: keep what we have.
            Err(_) => {
                truncated = true;
                break;
            }
        };
        if packet.track_id() != track_id {
            continue;
        }
        match decoder.decode(&packet) {
            Ok(audio) => {
                decoded_packets += 1;
                let spec = *audio.spec();
                if audio.frames() == 0 {
                    continue;
                }
                let needed = audio.capacity() * spec.channels.count();
                if buf.as_ref().is_none_or(|b| b.capacity() < needed) {
                    buf = Some(SampleBuffer::new(audio.capacity() as u64, spec));
                }
                let Some(b) = buf.as_mut() else { continue };
                b.copy_interleaved_ref(audio);
                frames += (b.len() / spec.channels.count().max(1)) as u64;
                sink.push(b.samples(), spec.channels.count(), spec.rate)?;
            }
            Err(SymphoniaError::DecodeError(_)) | Err(SymphoniaError::IoError(_)) => damaged += 1,
            Err(SymphoniaError::ResetRequired) => decoder.reset(),
            Err(SymphoniaError::Unsupported(what)) => {
                return Err(DecodeError::Unsupported(format!("{codec}: {what}")))
            }
            Err(e) => return Err(DecodeError::Corrupt(e.to_string())),
        }
    }
    // Mostly undecodable packets: not a damaged stream but not audio at all
    // (random bytes can pass for MP3 frame headers).
    if damaged > 0 && damaged >= decoded_packets {
        return Err(DecodeError::Corrupt(format!(
            "{damaged} of {} {codec} packets do not decode",
            damaged + decoded_packets
        )));
    }
    if let Some(expected) = params.n_frames {
        // Gapless trimming can shorten the stream by the encoder delay/padding.
        let slack = params.delay.unwrap_or(0) as u64 + params.padding.unwrap_or(0) as u64;
        truncated |= frames + slack < expected;
    }
    sink.finish(codec, damaged, truncated)
}

/// The fields of an `OpusHead` packet we act on (RFC 7845 §5.1).
struct OpusHead {
    channels: usize,
    pre_skip: u64,
    /// Linear factor from the header's Q7.8 dB output gain.
    gain: f32,
}

fn parse_opus_head(data: &[u8]) -> Result<OpusHead, DecodeError> {
    let Some(&[version, channels, s0, s1, _, _, _, _, g0, g1, family, ..]) = data.get(8..) else {
        return Err(DecodeError::Corrupt("OpusHead packet too short".into()));
    };
    // Major version 0 is the only one; minor versions stay compatible.
    if version >> 4 != 0 {
        return Err(DecodeError::Unsupported(format!(
            "Opus header version {version}"
        )));
    }
    if channels == 0 {
        return Err(DecodeError::Corrupt("OpusHead with zero channels".into()));
    }
    if family != 0 || channels > 2 {
        // Mapping families 1/255 need libopus's multistream decoder, which
        // audiopus does not wrap.
        return Err(DecodeError::Unsupported(format!(
            "multichannel Opus ({channels} channels, mapping family {family})"
        )));
    }
    let gain_db = f32::from(i16::from_le_bytes([g0, g1])) / 256.0;
    Ok(OpusHead {
        channels: usize::from(channels),
        pre_skip: u64::from(u16::from_le_bytes([s0, s1])),
        gain: 10f32.powf(gain_db / 20.0),
    })
}

fn decode_ogg_opus<R: Read + Seek>(
    mut reader: ogg::PacketReader<R>,
    head_packet: ogg::Packet,
) -> Result<DecodedAudio, DecodeError> {
    use audiopus::coder::Decoder;
    use audiopus::packet::Packet;
    use audiopus::{Channels, MutSignals, SampleRate};

    let head = parse_opus_head(&head_packet.data)?;
    let serial = head_packet.stream_serial();
    let channels = if head.channels == 2 {
        Channels::Stereo
    } else {
        Channels::Mono
    };
    let mut decoder = Decoder::new(SampleRate::Hz48000, channels)
        .map_err(|e| DecodeError::Unsupported(format!("libopus decoder: {e}")))?;

    let mut sink = Sink::new();
    let mut pcm = vec![0f32; OPUS_MAX_FRAME * head.channels];
    // Samples (per channel, at 48 kHz) decoded so far, pre-skip included:
    // the same scale as granule positions.
    let mut position: u64 = 0;
    let (mut damaged, mut decoded) = (0usize, 0usize);
    let mut truncated = false;
    let mut seen_tags = false;
    loop {
        let packet = match reader.read_packet() {
            Ok(Some(p)) => p,
            // A well-formed stream ends on a page flagged end-of-stream.
            Ok(None) => {
                truncated = true;
                break;
            }
            Err(_) if decoded > 0 => {
                truncated = true;
                break;
            }
            Err(e) => return Err(DecodeError::Corrupt(format!("Ogg: {e}"))),
        };
        // Other logical streams (chained or multiplexed) are not ours.
        if packet.stream_serial() != serial {
            continue;
        }
        if !seen_tags {
            seen_tags = true;
            if packet.data.starts_with(b"OpusTags") {
                continue;
            }
        }
        let n = Packet::try_from(packet.data.as_slice())
            .ok()
            .zip(MutSignals::try_from(pcm.as_mut_slice()).ok())
            .map(|(input, output)| decoder.decode_float(Some(input), output, false));
        let n = match n {
            Some(Ok(n)) => n.min(OPUS_MAX_FRAME),
            _ => {
                damaged += 1;
                continue;
            }
        };
        decoded += 1;
        let start = position;
        let mut end = position + n as u64;
        position = end;
        // The last page's granule position marks the real end: the encoder
        // padded the final frame.
        if packet.last_in_stream() {
            end = end.min(packet.absgp_page().max(start));
        }
        // Pre-skip: the decoder's warm-up samples at the start.
        let from = head.pre_skip.clamp(start, end);
        let frame = &mut pcm
            [((from - start) as usize * head.channels)..((end - start) as usize * head.channels)];
        if head.gain != 1.0 {
            frame.iter_mut().for_each(|s| *s *= head.gain);
        }
        if !frame.is_empty() {
            sink.push(frame, head.channels, OPUS_RATE)?;
        }
        if packet.last_in_stream() {
            break;
        }
    }
    if damaged > 0 && damaged >= decoded {
        return Err(DecodeError::Corrupt(format!(
            "{damaged} of {} Opus packets do not decode",
            damaged + decoded
        )));
    }
    let mut audio = sink.finish("opus".into(), damaged, truncated)?;
    audio.source_rate = OPUS_RATE;
    audio.source_channels = head.channels;
    Ok(audio)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-bit PCM WAV of `samples` (interleaved) in memory.
    fn wav(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut cursor = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
        for &s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        cursor.into_inner()
    }

    fn tone(rate: u32, len: usize) -> Vec<i16> {
        (0..len)
            .map(|n| {
                let t = n as f32 / rate as f32;
                (8_000.0 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn stereo_44k1_wav_becomes_16k_mono_of_the_same_duration() {
        // Identical channels average to the same signal.
        let mono = tone(44_100, 44_100);
        let stereo: Vec<i16> = mono.iter().flat_map(|&s| [s, s]).collect();
        let audio = decode_bytes(wav(44_100, 2, &stereo), Some("wav")).unwrap();
        assert_eq!(audio.samples.len(), 16_000);
        assert_eq!((audio.source_rate, audio.source_channels), (44_100, 2));
        let peak = audio.samples.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!((peak - 8_000.0 / 32_768.0).abs() < 0.01, "peak {peak}");
        assert!(!audio.truncated);
    }

    #[test]
    fn opposite_channels_cancel_when_averaged() {
        let left = tone(16_000, 1_600);
        let stereo: Vec<i16> = left.iter().flat_map(|&s| [s, -s]).collect();
        let audio = decode_bytes(wav(16_000, 2, &stereo), None).unwrap();
        assert!(audio.samples.iter().all(|s| s.abs() < 1e-4));
    }

    #[test]
    fn empty_inputs_are_empty_errors() {
        assert!(matches!(
            decode_bytes(Vec::new(), None),
            Err(DecodeError::Empty)
        ));
        let no_samples = wav(16_000, 1, &[]);
        assert!(matches!(
            decode_bytes(no_samples, Some("wav")),
            Err(DecodeError::Empty)
        ));
    }

    #[test]
    fn directories_and_missing_files_are_io_errors() {
        let dir = std::env::temp_dir();
        assert!(matches!(decode_file(&dir), Err(DecodeError::Io(_))));
        let missing = dir.join("callstream-no-such-file.wav");
        assert!(matches!(decode_file(&missing), Err(DecodeError::Io(_))));
    }

    #[test]
    fn text_is_unsupported() {
        let err =
            decode_bytes(b"hello, this is not audio at all\n".repeat(50), Some("txt")).unwrap_err();
        assert!(matches!(err, DecodeError::Unsupported(_)), "{err}");
    }

    #[test]
    fn truncated_wav_keeps_what_is_there_and_says_so() {
        let bytes = wav(16_000, 1, &tone(16_000, 16_000));
        let cut = bytes[..bytes.len() / 2].to_vec();
        let audio = decode_bytes(cut, Some("wav")).unwrap();
        assert!(audio.truncated);
        assert!((7_900..8_100).contains(&audio.samples.len()));
    }

    #[test]
    fn opus_head_fields_and_limits() {
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, 2, 0x38, 0x01, 0x80, 0xbb, 0, 0, 0x00, 0x06, 0]);
        let parsed = parse_opus_head(&head).unwrap();
        assert_eq!((parsed.channels, parsed.pre_skip), (2, 312));
        // +6 dB
        assert!((parsed.gain - 1.995).abs() < 0.01);
        head[18] = 1;
        assert!(matches!(
            parse_opus_head(&head),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(matches!(
            parse_opus_head(&head[..15]),
            Err(DecodeError::Corrupt(_))
        ));
    }

    /// Deterministic pseudo-random bytes (xorshift), no extra dependency.
    fn noise_bytes(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    #[test]
    fn garbage_never_panics() {
        for seed in 1..200u64 {
            let len = (seed as usize * 37) % 5_000 + 1;
            // Give most of them a plausible magic so the parsers go deeper.
            let magic: &[u8] = match seed % 5 {
                0 => b"RIFF",
                1 => b"OggS",
                2 => b"fLaC",
                3 => &[0xff, 0xfb],
                _ => b"",
            };
            let _ = decode_bytes([magic, &noise_bytes(len, seed)].concat(), None);
        }
    }
}
