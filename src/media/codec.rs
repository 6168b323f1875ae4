//! Telephony codecs: G.711 μ-law and A-law, and 16-bit linear PCM.
//!
//! G.711 decoding is one table lookup per byte; both tables are built at
//! compile time so there is no init order to get wrong and no branch per sample.
//! Decoded values follow ITU-T G.711 scaled to 16 bits (μ-law peaks at ±32124,
//! A-law at ±32256), the same convention as the ITU/Sun reference code.

use super::MediaError;

/// Payload encoding of a media stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 μ-law (PCMU), Twilio's only encoding.
    Mulaw,
    /// G.711 A-law (PCMA).
    Alaw,
    /// Signed 16-bit linear PCM, two bytes per sample.
    L16 { big_endian: bool },
}

impl Codec {
    /// Parses a MIME type or RTP encoding name, ignoring case and `;rate=…`-style
    /// parameters (the rate is configured separately).
    ///
    /// `audio/L16` and `L16` are big-endian as RFC 3551 defines them;
    /// `audio/x-l16` is the non-standard name Plivo and others use for
    /// little-endian PCM. An adapter that knows its provider's byte order
    /// better should construct [`Codec::L16`] itself.
    pub fn from_mime(mime: &str) -> Result<Self, MediaError> {
        let essence = mime.split(';').next().unwrap_or_default().trim();
        const NAMES: [(&str, Codec); 8] = [
            ("audio/x-mulaw", Codec::Mulaw),
            ("audio/pcmu", Codec::Mulaw),
            ("pcmu", Codec::Mulaw),
            ("audio/x-alaw", Codec::Alaw),
            ("pcma", Codec::Alaw),
            ("audio/x-l16", Codec::L16 { big_endian: false }),
            ("audio/l16", Codec::L16 { big_endian: true }),
            ("l16", Codec::L16 { big_endian: true }),
        ];
        NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(essence))
            .map(|&(_, codec)| codec)
            .ok_or_else(|| MediaError::UnsupportedCodec(mime.to_owned()))
    }

    /// Number of samples `payload_len` bytes decode to (rounded down for a torn L16 sample).
    pub fn samples_in(self, payload_len: usize) -> usize {
        match self {
            Codec::Mulaw | Codec::Alaw => payload_len,
            Codec::L16 { .. } => payload_len / 2,
        }
    }

    /// Decodes `payload` and appends the samples to `out`.
    ///
    /// On error `out` is left exactly as it was, so a bad frame costs nothing
    /// already decoded.
    pub fn decode_into(self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), MediaError> {
        match self {
            Codec::Mulaw => out.extend(payload.iter().map(|&b| MULAW_TO_LINEAR[usize::from(b)])),
            Codec::Alaw => out.extend(payload.iter().map(|&b| ALAW_TO_LINEAR[usize::from(b)])),
            Codec::L16 { big_endian } => {
                if payload.len() % 2 != 0 {
                    return Err(MediaError::OddPayloadLength(payload.len()));
                }
                let pairs = payload.chunks_exact(2).map(|p| [p[0], p[1]]);
                if big_endian {
                    out.extend(pairs.map(i16::from_be_bytes));
                } else {
                    out.extend(pairs.map(i16::from_le_bytes));
                }
            }
        }
        Ok(())
    }
}

/// μ-law code → linear sample (ITU-T G.711 table 2a, scaled by 4).
static MULAW_TO_LINEAR: [i16; 256] = table!(mulaw_to_linear);
/// A-law code → linear sample (ITU-T G.711 table 1a, scaled by 8).
static ALAW_TO_LINEAR: [i16; 256] = table!(alaw_to_linear);

/// Evaluates a `const fn(u8) -> i16` for every code (a macro: const fns cannot call fn pointers).
macro_rules! table {
    ($decode:ident) => {{
        let mut table = [0; 256];
        let mut code = 0;
        while code < 256 {
            table[code] = $decode(code as u8);
            code += 1;
        }
        table
    }};
}
use table;

/// Bias μ-law adds so every segment's magnitude starts at a power of two.
const MULAW_BIAS: i32 = 0x84;

const fn mulaw_to_linear(code: u8) -> i16 {
    // Codes are transmitted inverted (G.711 §3.3) so silence is not all zeros.
    let code = !code;
    let exponent = (code >> 4) & 0x07;
    let magnitude = ((((code & 0x0F) as i32) << 3) + MULAW_BIAS) << exponent;
    let value = magnitude - MULAW_BIAS;
    (if code & 0x80 != 0 { -value } else { value }) as i16
}

const fn alaw_to_linear(code: u8) -> i16 {
    // Even bits are inverted on the line (G.711 §3.2).
    let code = code ^ 0x55;
    let exponent = (code >> 4) & 0x07;
    let mantissa = ((code & 0x0F) as i32) << 4;
    let magnitude = match exponent {
        0 => mantissa + 8,
        _ => (mantissa + 0x108) << (exponent - 1),
    };
    // A-law's sign bit is 1 for positive values, unlike μ-law.
    (if code & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    }) as i16
}

/// Segment (exponent) of a biased magnitude: position of its top bit above bit 7.
fn segment(magnitude: i32) -> i32 {
    (31 - (magnitude | 0xFF).leading_zeros() as i32) - 7
}

/// Encodes one sample to G.711 μ-law, rounding towards zero within a segment
/// and clipping at the μ-law peak.
pub fn encode_mulaw(sample: i16) -> u8 {
    let sample = i32::from(sample);
    // Negative values use one's complement so -1 encodes like 0 and i16::MIN cannot overflow.
    let (magnitude, mask) = if sample < 0 {
        (MULAW_BIAS - sample - 1, 0x7F)
    } else {
        (MULAW_BIAS + sample, 0xFF)
    };
    let segment = segment(magnitude);
    let code = if segment >= 8 {
        0x7F
    } else {
        (segment << 4) | ((magnitude >> (segment + 3)) & 0x0F)
    };
    (code ^ mask) as u8
}

/// Encodes one sample to G.711 A-law.
pub fn encode_alaw(sample: i16) -> u8 {
    let sample = i32::from(sample);
    let (magnitude, mask) = if sample < 0 {
        (-sample - 1, 0x55)
    } else {
        (sample, 0xD5)
    };
    // |i16| < 2^15, so the segment is at most 7.
    let segment = segment(magnitude);
    let shift = if segment == 0 { 4 } else { segment + 3 };
    (((segment << 4) | ((magnitude >> shift) & 0x0F)) ^ mask) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(codec: Codec, payload: &[u8]) -> Vec<i16> {
        let mut out = Vec::new();
        codec.decode_into(payload, &mut out).expect("valid payload");
        out
    }

    #[test]
    fn mulaw_known_values() {
        // Values from ITU-T G.711 table 2a (×4) / the Sun reference decoder.
        let cases = [
            (0xFF, 0),
            (0x7F, 0),
            (0x00, -32124),
            (0x80, 32124),
            (0xFE, 8),
            (0x7E, -8),
            (0xF0, 120),
            (0xEF, 132),
            (0x8F, 16764),
            (0x0F, -16764),
        ];
        for (code, linear) in cases {
            assert_eq!(decode(Codec::Mulaw, &[code]), [linear], "code {code:#04x}");
        }
    }

    #[test]
    fn alaw_known_values() {
        // Values from ITU-T G.711 table 1a (×8) / the Sun reference decoder.
        let cases = [
            (0xD5, 8),
            (0x55, -8),
            (0xAA, 32256),
            (0x2A, -32256),
            (0xD4, 24),
            (0xC5, 264),
            (0xF5, 528),
            (0xE5, 1056),
            (0x80, 5504),
        ];
        for (code, linear) in cases {
            assert_eq!(decode(Codec::Alaw, &[code]), [linear], "code {code:#04x}");
        }
    }

    #[test]
    fn tables_are_odd_symmetric_and_monotonic() {
        for code in 0..=0x7Fu8 {
            assert_eq!(mulaw_to_linear(code), -mulaw_to_linear(code | 0x80));
            assert_eq!(alaw_to_linear(code), -alaw_to_linear(code | 0x80));
        }
        // μ-law: larger code below 0x80 means smaller magnitude (inverted).
        for code in 0x80..0xFFu8 {
            assert!(mulaw_to_linear(code) > mulaw_to_linear(code + 1));
        }
    }

    #[test]
    fn codes_round_trip() {
        for code in 0..=255u8 {
            let mu = encode_mulaw(mulaw_to_linear(code));
            // 0x7F is μ-law's negative zero; it decodes to 0, which encodes as 0xFF.
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(mu, expected, "μ-law code {code:#04x}");
            assert_eq!(
                encode_alaw(alaw_to_linear(code)),
                code,
                "A-law code {code:#04x}"
            );
        }
    }

    #[test]
    fn linear_round_trip_error_is_within_one_step() {
        for sample in i16::MIN..=i16::MAX {
            let mu = i32::from(mulaw_to_linear(encode_mulaw(sample)));
            let a = i32::from(alaw_to_linear(encode_alaw(sample)));
            let s = i32::from(sample);
            // Step size grows with the segment: 1/16 of the magnitude is a safe bound,
            // plus μ-law's clipping above its 32124 peak.
            let bound = |peak: i32| (s.abs() / 16).max(16) + (s.abs() - peak).max(0);
            assert!((mu - s).abs() <= bound(32124), "μ-law {sample} -> {mu}");
            assert!((a - s).abs() <= bound(32256), "A-law {sample} -> {a}");
        }
    }

    #[test]
    fn l16_byte_orders() {
        let payload = [0x12, 0x34, 0xFF, 0xFE];
        assert_eq!(
            decode(Codec::L16 { big_endian: true }, &payload),
            [0x1234, -2]
        );
        assert_eq!(
            decode(Codec::L16 { big_endian: false }, &payload),
            [0x3412, -257]
        );
    }

    #[test]
    fn l16_odd_length_is_an_error_and_keeps_output() {
        let mut out = vec![7];
        let err = Codec::L16 { big_endian: false }.decode_into(&[1, 2, 3], &mut out);
        assert_eq!(err, Err(MediaError::OddPayloadLength(3)));
        assert_eq!(out, [7]);
    }

    #[test]
    fn decode_appends() {
        let mut out = vec![1];
        Codec::Mulaw.decode_into(&[0xFF, 0x80], &mut out).unwrap();
        assert_eq!(out, [1, 0, 32124]);
    }

    #[test]
    fn mime_names() {
        let cases = [
            ("audio/x-mulaw", Codec::Mulaw),
            ("AUDIO/PCMU", Codec::Mulaw),
            ("PCMU", Codec::Mulaw),
            ("audio/x-alaw;rate=8000", Codec::Alaw),
            ("pcma", Codec::Alaw),
            ("audio/x-l16;rate=8000", Codec::L16 { big_endian: false }),
            (
                "audio/L16; rate=16000; channels=1",
                Codec::L16 { big_endian: true },
            ),
            (" L16 ", Codec::L16 { big_endian: true }),
        ];
        for (mime, codec) in cases {
            assert_eq!(Codec::from_mime(mime), Ok(codec), "{mime}");
        }
        for bad in ["", "audio/opus", "audio/x-mulawx", ";rate=8000"] {
            assert!(Codec::from_mime(bad).is_err(), "{bad:?}");
        }
    }
}
