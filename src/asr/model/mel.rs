//! Whisper's mel filterbank, computed rather than shipped.
//!
//! whisper.cpp reads the filterbank from the model file; openai-whisper ships
//! it as `assets/mel_filters.npz`, made with
//! `librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)`: Slaney mel scale,
//! Slaney ("area") normalisation, 0 Hz to Nyquist, float32. This follows
//! librosa's arithmetic step by step (f64 ramps, cast to f32, then scaled in
//! f64 and cast again) so the result equals the npz bit for bit.

/// Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / log_step()
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (log_step() * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

/// The `n_mels × (n_fft/2 + 1)` filterbank, row-major, as whisper.cpp expects
/// it after the hparams (`n_mels = 80`, `n_fft = 400`, 16 kHz for Whisper).
pub fn mel_filters(sample_rate: u32, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let n_freqs = n_fft / 2 + 1;
    // numpy.fft.rfftfreq(n_fft, 1/sr): k · 1/(n_fft · d).
    let d = 1.0 / f64::from(sample_rate);
    let df = 1.0 / (n_fft as f64 * d);
    let fft_freqs: Vec<f64> = (0..n_freqs).map(|k| k as f64 * df).collect();

    // n_mels + 2 points evenly spaced in mel (numpy.linspace: i·step + start,
    // last point exactly the stop), back to Hz.
    let n_points = n_mels + 2;
    let lo = hz_to_mel(0.0);
    let hi = hz_to_mel(f64::from(sample_rate) / 2.0);
    let step = (hi - lo) / (n_points - 1) as f64;
    let mel_hz: Vec<f64> = (0..n_points)
        .map(|i| {
            let m = if i == n_points - 1 {
                hi
            } else {
                i as f64 * step + lo
            };
            mel_to_hz(m)
        })
        .collect();

    let mut out = Vec::with_capacity(n_mels * n_freqs);
    for i in 0..n_mels {
        let below = mel_hz[i + 1] - mel_hz[i];
        let above = mel_hz[i + 2] - mel_hz[i + 1];
        let enorm = 2.0 / (mel_hz[i + 2] - mel_hz[i]);
        for &f in &fft_freqs {
            let lower = -(mel_hz[i] - f) / below;
            let upper = (mel_hz[i + 2] - f) / above;
            // np.maximum(0, np.minimum(lower, upper)), keeping numpy's
            // choice of operand so a -0.0 stays -0.0 (it does at [0][0]).
            let tri = if lower <= upper { lower } else { upper };
            let tri = if tri >= 0.0 { tri } else { 0.0 };
            out.push(((tri as f32) as f64 * enorm) as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_triangles() {
        let m = mel_filters(16_000, 400, 80);
        assert_eq!(m.len(), 80 * 201);
        assert!(m.iter().all(|v| *v >= 0.0 && v.is_finite()));
        // Every filter has some weight, and each is one contiguous triangle.
        for row in m.chunks(201) {
            let nz: Vec<usize> = (0..201).filter(|&k| row[k] > 0.0).collect();
            assert!(!nz.is_empty());
            assert_eq!(nz.last().unwrap() - nz[0] + 1, nz.len());
        }
    }

    #[test]
    fn mel_scale_is_slaney() {
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((mel_to_hz(hz_to_mel(4321.0)) - 4321.0).abs() < 1e-9);
        assert!((hz_to_mel(500.0) - 7.5).abs() < 1e-12);
    }
}
