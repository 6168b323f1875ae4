//! Just enough of the Prometheus text format to read the gateway's metrics:
//! samples keyed by name and labels, deltas between two scrapes, and
//! quantiles interpolated from histogram buckets.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One scrape: `name{labels}` → value.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    samples: HashMap<String, f64>,
}

impl Snapshot {
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                Some((key.to_string(), value.parse().ok()?))
            })
            .collect();
        Self { samples }
    }

    pub fn counter(&self, name: &str) -> f64 {
        self.samples.get(name).copied().unwrap_or(0.0)
    }

    pub fn gauge(&self, name: &str) -> f64 {
        self.counter(name)
    }

    /// Values of `name{label="…"}` by label value.
    pub fn labelled_counter(&self, name: &str, label: &str) -> BTreeMap<String, u64> {
        let prefix = format!("{name}{{{label}=\"");
        self.samples
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(&prefix)?;
                let value = rest.strip_suffix("\"}")?;
                Some((value.to_string(), v.max(0.0) as u64))
            })
            .collect()
    }

    /// `self - earlier`, sample by sample (counters and histogram buckets).
    pub fn delta(&self, earlier: &Snapshot) -> Snapshot {
        let samples = self
            .samples
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v - earlier.samples.get(k).copied().unwrap_or(0.0),
                )
            })
            .collect();
        Snapshot { samples }
    }

    /// The `q` quantile of histogram `name`, interpolated linearly inside the
    /// bucket that holds it (as PromQL's histogram_quantile does). 0 when empty.
    pub fn histogram_quantile(&self, name: &str, q: f64) -> f64 {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter_map(|(k, v)| {
                let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, *v))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let Some(&(_, total)) = buckets.last() else {
            return 0.0;
        };
        if total <= 0.0 {
            return 0.0;
        }
        let rank = q * total;
        let (mut prev_bound, mut prev_count) = (0.0, 0.0);
        for (bound, count) in buckets {
            if count >= rank {
                if bound.is_infinite() {
                    return prev_bound;
                }
                let in_bucket = count - prev_count;
                let frac = if in_bucket > 0.0 {
                    (rank - prev_count) / in_bucket
                } else {
                    1.0
                };
                return prev_bound + (bound - prev_bound) * frac;
            }
            (prev_bound, prev_count) = (bound, count);
        }
        prev_bound
    }
}

/// GETs a plain-HTTP metrics URL (loopback gateways; no TLS).
pub async fn fetch(url: &str) -> anyhow::Result<Snapshot> {
    let parsed = url::Url::parse(url).context("metrics URL")?;
    if parsed.scheme() != "http" {
        bail!("metrics URL must be http://");
    }
    let host = parsed.host_str().context("metrics URL has no host")?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let mut conn = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n",
        parsed.path()
    );
    conn.write_all(request.as_bytes()).await?;
    let mut body = Vec::new();
    conn.read_to_end(&mut body).await?;
    let text = String::from_utf8_lossy(&body);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{url}: {}", head.lines().next().unwrap_or_default());
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(Snapshot::parse(&dechunk(rest)));
    }
    Ok(Snapshot::parse(rest))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# HELP x\n\
        h_bucket{le=\"0.001\"} 10\nh_bucket{le=\"0.01\"} 10\nh_bucket{le=\"+Inf\"} 10\n\
        d{reason=\"late\"} 1\nd{reason=\"malformed\"} 0\nf 5\n";
    const AFTER: &str = "h_bucket{le=\"0.001\"} 60\nh_bucket{le=\"0.01\"} 109\n\
        h_bucket{le=\"+Inf\"} 110\nd{reason=\"late\"} 1\nd{reason=\"malformed\"} 3\nf 25\n";

    #[test]
    fn deltas_and_quantiles() {
        let d = Snapshot::parse(AFTER).delta(&Snapshot::parse(BEFORE));
        assert_eq!(d.counter("f"), 20.0);
        let by = d.labelled_counter("d", "reason");
        assert_eq!(by["late"], 0);
        assert_eq!(by["malformed"], 3);
        // 100 observations: 50 ≤ 1 ms, 49 in (1, 10] ms, 1 above.
        assert!((d.histogram_quantile("h", 0.5) - 0.001).abs() < 1e-9);
        let p99 = d.histogram_quantile("h", 0.99);
        assert!(p99 > 0.009 && p99 <= 0.01 + 1e-12, "{p99}");
        assert_eq!(Snapshot::default().histogram_quantile("h", 0.5), 0.0);
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
