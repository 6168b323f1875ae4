//! Sample-rate conversion: rubato's fixed-ratio FFT resampler with its
//! filter delay compensated, so output positions are source times.
//!
//! [`StreamResampler`] converts mono `f32` between any two rates (files come
//! at whatever rate their encoder chose); [`Upsampler`] is the live path's
//! view of it: placed `i16` PCM from a provider rate to the 16 kHz that
//! speech recognition takes.

use rubato::{FftFixedInOut, Resampler as _};

use super::MediaError;

/// Output rate of [`Upsampler`]: what Whisper and most VADs expect.
pub const WIDEBAND_RATE: u32 = 16_000;

/// Input rates with a resampler configuration we have tested.
///
/// The rate comes from the provider's start message, so it is input: an
/// arbitrary rate (say 8001 Hz) would make the FFT as long as the rate itself.
pub const SUPPORTED_RATES: [u32; 9] = [
    8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000,
];

/// Highest rate accepted on either side. Real audio stops at 384 kHz; the cap
/// bounds the FFT length (which can reach the rate itself for coprime rates),
/// since a rate read from a file header is untrusted input.
pub const MAX_RATE: u32 = 384_000;

/// The rate pair cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot resample from {from} Hz to {to} Hz (rates must be 1..={MAX_RATE} Hz)")]
pub struct ResampleError {
    pub from: u32,
    pub to: u32,
}

/// Converts one mono stream from `from` Hz to `to` Hz, accepting input in
/// pieces of any size.
///
/// Output sample `k` is input time `k / to` seconds: the FFT filter's delay
/// is dropped at the start and pushed out with zeros on [`flush`], so `N`
/// input samples yield exactly `ceil(N * to / from)` output samples.
/// Timestamps computed from output positions therefore match the source.
///
/// [`flush`]: StreamResampler::flush
pub struct StreamResampler {
    from: u32,
    to: u32,
    /// `None` when the rates are equal.
    fft: Option<Fft>,
    consumed: u64,
    produced: u64,
}

struct Fft {
    resampler: FftFixedInOut<f32>,
    chunk_in: usize,
    /// Input not yet processed; never longer than one chunk.
    pending: Vec<f32>,
    chunk_out: Vec<f32>,
    /// Leading output samples still to drop (filter delay).
    to_skip: usize,
}

impl StreamResampler {
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        let valid = 1..=MAX_RATE;
        if !valid.contains(&from) || !valid.contains(&to) {
            return Err(ResampleError { from, to });
        }
        let build = |chunk_hint: usize| {
            FftFixedInOut::<f32>::new(from as usize, to as usize, chunk_hint.max(1), 1)
                .map_err(|_| ResampleError { from, to })
        };
        let fft = if from == to {
            None
        } else {
            // Chunks of about 20 ms, or the smallest the rate ratio allows.
            let mut resampler = build(from as usize / 50)?;
            // The sinc is centred on sample `len / 2`: only even chunk lengths
            // have the whole-sample delay that `output_delay()` reports.
            if resampler.input_frames_next() % 2 == 1 || resampler.output_frames_next() % 2 == 1 {
                resampler = build(2 * resampler.input_frames_next())?;
            }
            Some(Fft {
                chunk_in: resampler.input_frames_next(),
                pending: Vec::with_capacity(resampler.input_frames_next()),
                chunk_out: vec![0.0; resampler.output_frames_next()],
                to_skip: resampler.output_delay(),
                resampler,
            })
        };
        Ok(Self {
            from,
            to,
            fft,
            consumed: 0,
            produced: 0,
        })
    }

    pub fn input_rate(&self) -> u32 {
        self.from
    }

    pub fn output_rate(&self) -> u32 {
        self.to
    }

    /// Filter delay in output samples that this resampler compensates.
    pub fn delay(&self) -> usize {
        self.fft.as_ref().map_or(0, |f| f.resampler.output_delay())
    }

    /// Resamples `input`, appending whatever output is ready to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.consumed += input.len() as u64;
        let before = out.len();
        match &mut self.fft {
            None => out.extend_from_slice(input),
            Some(fft) => {
                let mut rest = input;
                while !rest.is_empty() {
                    let room = fft.chunk_in - fft.pending.len();
                    let (now, later) = rest.split_at(room.min(rest.len()));
                    fft.pending.extend_from_slice(now);
                    rest = later;
                    if fft.pending.len() == fft.chunk_in {
                        fft.run_chunk(out, usize::MAX);
                    }
                }
            }
        }
        self.produced += (out.len() - before) as u64;
    }

    /// Ends the stream: appends the delayed tail so the output covers the
    /// whole input, then resets for a new stream.
    pub fn flush(&mut self, out: &mut Vec<f32>) {
        let expected = (u128::from(self.consumed) * u128::from(self.to))
            .div_ceil(u128::from(self.from)) as u64;
        if let Some(fft) = &mut self.fft {
            while self.produced < expected {
                fft.pending.resize(fft.chunk_in, 0.0);
                let before = out.len();
                fft.run_chunk(out, (expected - self.produced) as usize);
                self.produced += (out.len() - before) as u64;
            }
            fft.resampler.reset();
            fft.pending.clear();
            fft.to_skip = fft.resampler.output_delay();
        }
        self.consumed = 0;
        self.produced = 0;
    }
}

impl Fft {
    /// Resamples the full `pending` chunk, appending at most `limit` samples
    /// past the delay.
    fn run_chunk(&mut self, out: &mut Vec<f32>, limit: usize) {
        let result =
            self.resampler
                .process_into_buffer(&[&self.pending], &mut [&mut self.chunk_out], None);
        // Both buffers are sized from the resampler's own frame counts, so this
        // cannot fail; should it ever, emitting silence keeps the timing intact.
        if result.is_err() {
            self.chunk_out.fill(0.0);
        }
        self.pending.clear();
        let skip = self.to_skip.min(self.chunk_out.len());
        self.to_skip -= skip;
        let ready = &self.chunk_out[skip..];
        // The sinc filter rings slightly past full scale on clipped input.
        out.extend(
            ready[..ready.len().min(limit)]
                .iter()
                .map(|s| s.clamp(-1.0, 1.0)),
        );
    }
}

/// Resamples a whole buffer; see [`StreamResampler`] for the length contract.
pub fn resample(input: &[f32], from: u32, to: u32) -> Result<Vec<f32>, ResampleError> {
    let mut resampler = StreamResampler::new(from, to)?;
    let expected = (input.len() as u128 * u128::from(to)).div_ceil(u128::from(from)) as usize;
    let mut out = Vec::with_capacity(expected);
    resampler.process(input, &mut out);
    resampler.flush(&mut out);
    Ok(out)
}

/// Resamples one mono `i16` stream to [`WIDEBAND_RATE`], accepting input in
/// pieces of any size.
///
/// # Delay
/// Input is buffered into 20 ms chunks (or the nearest size the rate ratio
/// allows); the FFT filter is as long as a chunk, so its raw output lags by
/// half an output chunk (160 samples, 10 ms, for 8 kHz in). Those leading
/// samples are dropped and, on [`flush`], zeros push out the tail, so output
/// sample `k` is input time `k / 16000` s and `N` input samples yield
/// `ceil(N * 16000 / rate)` output samples. Captions and recordings align by
/// those times. The real-time latency is one chunk of buffering plus the
/// filter delay (30 ms at 8 kHz).
///
/// [`flush`]: Upsampler::flush
pub struct Upsampler {
    inner: StreamResampler,
    /// Input converted to `f32`, reused.
    scratch: Vec<f32>,
}

impl Upsampler {
    /// Creates a resampler from `rate` Hz; see [`SUPPORTED_RATES`].
    pub fn new(rate: u32) -> Result<Self, MediaError> {
        if !SUPPORTED_RATES.contains(&rate) {
            return Err(MediaError::UnsupportedSampleRate(rate));
        }
        let inner = StreamResampler::new(rate, WIDEBAND_RATE)
            .map_err(|_| MediaError::UnsupportedSampleRate(rate))?;
        Ok(Self {
            inner,
            scratch: Vec::with_capacity(1024),
        })
    }

    /// Input sample rate in Hz.
    pub fn input_rate(&self) -> u32 {
        self.inner.input_rate()
    }

    /// Filter delay in output samples that this resampler compensates.
    pub fn delay(&self) -> usize {
        self.inner.delay()
    }

    /// Resamples `input` and appends whatever output is ready to `out`.
    ///
    /// Allocation-free apart from growing `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<f32>) {
        self.scratch.clear();
        self.scratch.extend(input.iter().map(|&s| to_f32(s)));
        self.inner.process(&self.scratch, out);
    }

    /// Ends the stream: appends the delayed tail so the total output matches
    /// the total input duration, then resets for a new stream.
    pub fn flush(&mut self, out: &mut Vec<f32>) {
        self.inner.flush(out);
    }
}

fn to_f32(sample: i16) -> f32 {
    f32::from(sample) / 32768.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::PI;

    fn sine(rate: u32, freq: f32, amplitude: f32, len: usize) -> Vec<i16> {
        (0..len)
            .map(|n| {
                (amplitude * 32767.0 * (2.0 * PI * freq * n as f32 / rate as f32).sin()) as i16
            })
            .collect()
    }

    fn resample_all(rate: u32, input: &[i16]) -> Vec<f32> {
        let mut up = Upsampler::new(rate).unwrap();
        let mut out = Vec::new();
        up.process(input, &mut out);
        up.flush(&mut out);
        out
    }

    /// Largest deviation from the ideal 16 kHz sine, ignoring the edges where
    /// the stream starts and stops abruptly.
    fn sine_error(out: &[f32], freq: f32, amplitude: f32) -> f32 {
        let edge = 400;
        out[edge..out.len() - edge]
            .iter()
            .enumerate()
            .map(|(i, &y)| {
                let t = (i + edge) as f32 / WIDEBAND_RATE as f32;
                (y - amplitude * (2.0 * PI * freq * t).sin()).abs()
            })
            .fold(0.0, f32::max)
    }

    #[test]
    fn sine_8k_keeps_frequency_amplitude_and_phase() {
        let input = sine(8_000, 1_000.0, 0.5, 8_000);
        let out = resample_all(8_000, &input);
        assert_eq!(out.len(), 16_000);
        // Matching the ideal sine sample for sample checks frequency and amplitude.
        // (Not the delay: 10 ms is a whole number of 1 kHz periods; see the tests below.)
        let err = sine_error(&out, 1_000.0, 0.5);
        assert!(err < 0.01, "max error {err}");
    }

    #[test]
    fn all_rates_align_and_have_exact_length() {
        // 440 Hz: no filter delay is a whole number of periods, so any lag shows.
        for rate in [
            8_000, 11_025, 12_000, 22_050, 24_000, 32_000, 44_100, 48_000,
        ] {
            let input = sine(rate, 440.0, 0.5, rate as usize);
            let out = resample_all(rate, &input);
            assert_eq!(out.len(), 16_000, "{rate} Hz");
            let err = sine_error(&out, 440.0, 0.5);
            assert!(err < 0.01, "{rate} Hz: max error {err}");
        }
    }

    #[test]
    fn click_stays_in_place() {
        let mut input = vec![0i16; 1_600];
        input[1_000] = 20_000;
        let out = resample_all(8_000, &input);
        assert_eq!(out.len(), 3_200);
        let peak = (0..out.len())
            .max_by(|&a, &b| out[a].abs().total_cmp(&out[b].abs()))
            .unwrap();
        assert_eq!(peak, 2_000);
    }

    #[test]
    fn piece_sizes_do_not_matter() {
        let input = sine(8_000, 700.0, 0.8, 4_321);
        let whole = resample_all(8_000, &input);
        let mut up = Upsampler::new(8_000).unwrap();
        let mut pieces = Vec::new();
        let mut rest = &input[..];
        for size in [1, 7, 160, 333, 0, 159].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at((*size).min(rest.len()));
            up.process(now, &mut pieces);
            rest = later;
        }
        up.flush(&mut pieces);
        assert_eq!(pieces, whole);
    }

    #[test]
    fn flush_resets_for_the_next_stream() {
        let input = sine(8_000, 1_000.0, 0.5, 800);
        let mut up = Upsampler::new(8_000).unwrap();
        let (mut first, mut second) = (Vec::new(), Vec::new());
        up.process(&input, &mut first);
        up.flush(&mut first);
        up.process(&input, &mut second);
        up.flush(&mut second);
        assert_eq!(first, second);
        assert_eq!(first.len(), 1_600);
    }

    #[test]
    fn wideband_passes_through() {
        let input = [0, 16_384, -32_768, 32_767];
        let out = resample_all(16_000, &input);
        assert_eq!(out, [0.0, 0.5, -1.0, 32_767.0 / 32_768.0]);
    }

    #[test]
    fn output_stays_in_range_on_clipped_input() {
        let square: Vec<i16> = (0..1_600)
            .map(|n| if n / 20 % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        let out = resample_all(8_000, &square);
        assert!(out.iter().all(|s| (-1.0..=1.0).contains(s)));
    }

    #[test]
    fn unsupported_rates_are_errors() {
        for rate in [0, 1, 8_001, u32::MAX] {
            assert_eq!(
                Upsampler::new(rate).err(),
                Some(MediaError::UnsupportedSampleRate(rate))
            );
        }
    }

    #[test]
    fn delay_is_half_a_chunk() {
        assert_eq!(Upsampler::new(8_000).unwrap().delay(), 160);
        assert_eq!(Upsampler::new(16_000).unwrap().delay(), 0);
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;
    use std::f32::consts::PI;

    fn sine(rate: u32, freq: f32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|n| 0.5 * (2.0 * PI * freq * n as f32 / rate as f32).sin())
            .collect()
    }

    /// Largest deviation from the ideal sine at `rate`, ignoring the edges.
    fn sine_error(out: &[f32], rate: u32, freq: f32) -> f32 {
        let edge = out.len() / 20;
        out[edge..out.len() - edge]
            .iter()
            .enumerate()
            .map(|(i, &y)| {
                let t = (i + edge) as f32 / rate as f32;
                (y - 0.5 * (2.0 * PI * freq * t).sin()).abs()
            })
            .fold(0.0, f32::max)
    }

    #[test]
    fn common_and_odd_rates_to_16k_align_with_exact_length() {
        // 440 Hz: no filter delay is a whole number of periods, so any lag shows.
        for from in [
            8_000, 11_025, 22_050, 44_100, 48_000, 88_200, 96_000, 8_009, 37_800,
        ] {
            let out = resample(&sine(from, 440.0, from as usize), from, 16_000).unwrap();
            assert_eq!(out.len(), 16_000, "{from} Hz");
            let err = sine_error(&out, 16_000, 440.0);
            assert!(err < 0.01, "{from} Hz: max error {err}");
        }
    }

    #[test]
    fn downsampling_removes_content_above_the_new_nyquist() {
        // 12 kHz cannot exist at 16 kHz; it must not alias down to 4 kHz.
        let out = resample(&sine(48_000, 12_000.0, 48_000), 48_000, 16_000).unwrap();
        let mid = &out[1_000..15_000];
        let rms = (mid.iter().map(|s| s * s).sum::<f32>() / mid.len() as f32).sqrt();
        assert!(rms < 0.01, "aliased energy {rms}");
    }

    #[test]
    fn piece_sizes_do_not_matter() {
        let input = sine(44_100, 700.0, 10_007);
        let whole = resample(&input, 44_100, 16_000).unwrap();
        let mut r = StreamResampler::new(44_100, 16_000).unwrap();
        let mut pieces = Vec::new();
        for chunk in input.chunks(333) {
            r.process(chunk, &mut pieces);
        }
        r.flush(&mut pieces);
        assert_eq!(pieces, whole);
    }

    #[test]
    fn equal_rates_pass_through() {
        let input = [0.0, 0.5, -1.0, 0.25];
        assert_eq!(resample(&input, 16_000, 16_000).unwrap(), input);
    }

    #[test]
    fn rates_out_of_range_are_errors() {
        for (from, to) in [(0, 16_000), (16_000, 0), (MAX_RATE + 1, 16_000)] {
            assert_eq!(
                StreamResampler::new(from, to).err(),
                Some(ResampleError { from, to })
            );
        }
    }
}
