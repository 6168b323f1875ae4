//! The WAV framing of recordings: our own 44-byte PCM header, and a
//! tolerant reader of the RIFF chunks of WAVs we did not write (provider
//! recordings), for their format and duration.

/// Length of the canonical PCM header this module writes.
pub const HEADER_LEN: usize = 44;

/// A 16-bit PCM WAV header for `data_len` bytes of interleaved samples.
/// `data_len` of `u32::MAX` is the "size unknown" placeholder a streaming
/// writer uses until the real size is known.
pub fn pcm16_header(channels: u16, sample_rate: u32, data_len: u32) -> [u8; HEADER_LEN] {
    let block_align = channels * 2;
    let byte_rate = sample_rate * u32::from(block_align);
    let riff_len = data_len.saturating_add(36);
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&riff_len.to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// Format and layout of a WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavInfo {
    /// WAVE format tag (1 PCM, 3 float, 6 A-law, 7 μ-law, 0xFFFE extensible).
    pub format_tag: u16,
    pub channels: u16,
    pub sample_rate: u32,
    pub byte_rate: u32,
    pub block_align: u16,
    pub bits_per_sample: u16,
    /// Where the sample data starts.
    pub data_offset: u64,
    /// Sample data bytes actually present (a declared size past the end of
    /// the file, or a streaming placeholder, is cut to what is there).
    pub data_len: u64,
}

impl WavInfo {
    pub fn duration_ms(&self) -> u64 {
        if self.byte_rate == 0 {
            return 0;
        }
        (u128::from(self.data_len) * 1000 / u128::from(self.byte_rate)) as u64
    }
}

/// Reads the RIFF chunks at the start of a WAV file of `total_len` bytes.
/// `prefix` must hold at least everything up to the `data` chunk header.
pub fn parse(prefix: &[u8], total_len: u64) -> Result<WavInfo, String> {
    if prefix.len() < 12 || &prefix[0..4] != b"RIFF" || &prefix[8..12] != b"WAVE" {
        return Err("no RIFF/WAVE header".into());
    }
    let u16_at = |at: usize| u16::from_le_bytes([prefix[at], prefix[at + 1]]);
    let u32_at = |at: usize| {
        u32::from_le_bytes([prefix[at], prefix[at + 1], prefix[at + 2], prefix[at + 3]])
    };
    let mut fmt = None;
    let mut at = 12usize;
    loop {
        if at + 8 > prefix.len() {
            return Err("no data chunk near the start of the file".into());
        }
        let id = &prefix[at..at + 4];
        let size = u32_at(at + 4);
        let body = at + 8;
        if id == b"fmt " {
            if size < 16 || body + 16 > prefix.len() {
                return Err("fmt chunk too short".into());
            }
            fmt = Some((
                u16_at(body),
                u16_at(body + 2),
                u32_at(body + 4),
                u32_at(body + 8),
                u16_at(body + 12),
                u16_at(body + 14),
            ));
        } else if id == b"data" {
            let Some((format_tag, channels, sample_rate, byte_rate, block_align, bits)) = fmt
            else {
                return Err("data chunk before fmt chunk".into());
            };
            if channels == 0 || channels > 16 {
                return Err(format!("unsupported channel count {channels}"));
            }
            if !(1_000..=384_000).contains(&sample_rate) {
                return Err(format!("unsupported sample rate {sample_rate}"));
            }
            if byte_rate == 0 || block_align == 0 {
                return Err("zero byte rate or block align".into());
            }
            let data_offset = body as u64;
            let present = total_len.saturating_sub(data_offset);
            let declared = u64::from(size);
            let mut data_len = if size == 0 || size == u32::MAX {
                present
            } else {
                declared.min(present)
            };
            data_len -= data_len % u64::from(block_align);
            return Ok(WavInfo {
                format_tag,
                channels,
                sample_rate,
                byte_rate,
                block_align,
                bits_per_sample: bits,
                data_offset,
                data_len,
            });
        }
        // Chunks are padded to an even length.
        let next = body as u64 + u64::from(size) + u64::from(size & 1);
        if next > prefix.len() as u64 {
            return Err("no data chunk near the start of the file".into());
        }
        at = next as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_header_parses_and_hound_agrees() {
        let mut file = pcm16_header(2, 8000, 8).to_vec();
        file.extend_from_slice(&[1, 0, 2, 0, 3, 0, 4, 0]);
        let info = parse(&file, file.len() as u64).unwrap();
        assert_eq!(
            (
                info.channels,
                info.sample_rate,
                info.data_offset,
                info.data_len
            ),
            (2, 8000, 44, 8)
        );
        let mut r = hound::WavReader::new(std::io::Cursor::new(&file)).unwrap();
        assert_eq!(r.spec().channels, 2);
        let s: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
        assert_eq!(s, [1, 2, 3, 4]);
    }

    #[test]
    fn placeholder_sizes_are_cut_to_what_is_present() {
        let mut file = pcm16_header(1, 8000, u32::MAX).to_vec();
        file.extend_from_slice(&[0; 7]);
        let info = parse(&file, file.len() as u64).unwrap();
        assert_eq!(info.data_len, 6, "whole frames only");
        assert_eq!(info.duration_ms(), 0);
    }

    #[test]
    fn other_chunks_are_skipped_and_garbage_refused() {
        let h = pcm16_header(1, 16_000, 32_000);
        let mut file = h[..36].to_vec();
        file.extend_from_slice(b"LIST");
        file.extend_from_slice(&3u32.to_le_bytes());
        file.extend_from_slice(b"abc\0");
        file.extend_from_slice(&h[36..]);
        let info = parse(&file, file.len() as u64 + 32_000).unwrap();
        assert_eq!((info.data_offset, info.duration_ms()), (56, 1000));
        assert!(parse(b"not a wav file at all", 21).is_err());
        assert!(parse(&h[..20], 20).is_err());
    }
}
