//! Recording metadata, signed download links, ranged downloads and
//! deletion.
//!
//! `GET /v1/recordings/{id}` (API key) answers the metadata and a link
//! signed for that tenant and recording ([`crate::recording::signing`]);
//! the link itself needs no key (players and browsers cannot send one), so
//! the download route is public and trusts only the signature. The WAV is
//! decrypted on a blocking thread and streamed in 64 KiB pieces; a `Range`
//! seeks straight to its chunk, never decrypting from the start.

use std::io::{Read, Seek, SeekFrom};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::auth::Auth;
use super::{AppError, AppState};
use crate::recording::signing::LinkParams;
use crate::recording::{RecordingError, StorageError};
use crate::store::{Recording, RecordingStatus};

/// Bytes read from the decrypting reader per body piece.
const PIECE: usize = 64 * 1024;

/// The path a link signs: the route's, with the recording id.
fn download_path(id: &str) -> String {
    format!("/v1/recordings/{id}/download")
}

/// A signed link to download a recording.
#[derive(Debug, Serialize)]
pub struct DownloadLink {
    /// Absolute URL (from `public_url`), valid until `expires_at`.
    pub url: String,
    /// Unix seconds.
    pub expires_at: i64,
}

#[derive(Debug, Serialize)]
pub struct RecordingDetail {
    #[serde(flatten)]
    recording: Recording,
    /// Present when the recording can be downloaded (not deleted, not
    /// still being written).
    download: Option<DownloadLink>,
}

fn readable(rec: &Recording) -> bool {
    match rec.status {
        RecordingStatus::Completed | RecordingStatus::Interrupted => true,
        RecordingStatus::Failed => rec.bytes.is_some(),
        RecordingStatus::Recording | RecordingStatus::Deleted => false,
    }
}

pub async fn get(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Json<RecordingDetail>, AppError> {
    let recording = state.store.get_recording(&who.tenant_id, &id).await?;
    let download = readable(&recording).then(|| {
        let ttl = i64::from(state.config.recording.url_ttl_minutes) * 60;
        let expires_at = crate::store::now_ms() / 1000 + ttl;
        let path = download_path(&recording.id);
        let link = state
            .url_signer
            .sign("GET", &path, &who.tenant_id, expires_at);
        let base = state.config.public_url().to_string();
        DownloadLink {
            url: format!("{}{path}?{}", base.trim_end_matches('/'), link.query()),
            expires_at,
        }
    });
    Ok(Json(RecordingDetail {
        recording,
        download,
    }))
}

pub async fn delete(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    // Scoping first: another tenant's id is 404 whatever else holds.
    let rec = state.store.get_recording(&who.tenant_id, &id).await?;
    let recordings = state
        .recordings
        .as_ref()
        .ok_or(AppError::Unavailable("recording is off"))?;
    let reason = format!("deleted through the API by user {}", who.user_id);
    match recordings.delete(&who.tenant_id, &rec.id, &reason).await {
        Ok(done) => Ok(Json(done).into_response()),
        Err(e) => Ok(recording_error(e)),
    }
}

/// A JSON error response with our usual shape.
fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, Json(body)).into_response()
}

fn forbidden_link() -> Response {
    json_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        "download link is invalid or has expired",
    )
}

/// Recording errors as responses: corruption is named as such (a 500 the
/// operator must look at), never served as audio.
fn recording_error(e: RecordingError) -> Response {
    match e {
        RecordingError::NotFound => AppError::NotFound.into_response(),
        RecordingError::NotReadable(status) => json_error(
            StatusCode::CONFLICT,
            "not_readable",
            &format!("recording is {status}, not readable"),
        ),
        RecordingError::Corrupt(_) => {
            tracing::error!(error = %e, "recording failed to decrypt");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "recording_corrupt",
                "recording is corrupt (ciphertext failed authentication); no audio served",
            )
        }
        RecordingError::Storage(StorageError::NotFound) => {
            tracing::error!(error = %e, "recording object missing");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "recording_missing",
                "recording file is missing from storage",
            )
        }
        other => AppError::Internal(other.to_string()).into_response(),
    }
}

/// What a `Range` header asks of a body of `len` bytes (RFC 9110 §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No usable range: serve everything (200). Also for invalid syntax,
    /// other units and several ranges, which a server may ignore.
    Full,
    /// Inclusive `first..=last` (206).
    Part { first: u64, last: u64 },
    /// Syntactically fine but outside the body (416).
    Unsatisfiable,
}

/// Parses a single-range `Range` header against a body of `len` bytes.
pub fn parse_range(header: Option<&str>, len: u64) -> ByteRange {
    let Some(spec) = header
        .map(str::trim)
        .and_then(|h| h.strip_prefix("bytes="))
        .map(str::trim)
    else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return ByteRange::Full;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim().is_empty(), b.trim().is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => match num(b) {
            None => ByteRange::Full,
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if len == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Part {
                first: len.saturating_sub(n),
                last: len - 1,
            },
        },
        // `a-`: from a to the end.
        (false, true) => match num(a) {
            None => ByteRange::Full,
            Some(first) if first >= len => ByteRange::Unsatisfiable,
            Some(first) => ByteRange::Part {
                first,
                last: len - 1,
            },
        },
        // `a-b`.
        (false, false) => match (num(a), num(b)) {
            (Some(first), Some(last)) if first <= last => {
                if first >= len {
                    ByteRange::Unsatisfiable
                } else {
                    ByteRange::Part {
                        first,
                        last: last.min(len - 1),
                    }
                }
            }
            _ => ByteRange::Full,
        },
        (true, true) => ByteRange::Full,
    }
}

pub async fn download(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(link) = LinkParams::parse(query.as_deref()) else {
        return forbidden_link();
    };
    let now = crate::store::now_ms() / 1000;
    if let Err(why) = state
        .url_signer
        .verify("GET", &download_path(&id), &link, now)
    {
        tracing::info!(reason = %why, "download link refused");
        return forbidden_link();
    }
    let Some(recordings) = state.recordings.as_ref() else {
        return AppError::Unavailable("recording is off").into_response();
    };
    let (rec, mut reader) = match recordings.open_wav(&link.tenant, &id).await {
        Ok(r) => r,
        // A valid signature for a tenant that does not own this id: refuse
        // like any other bad link.
        Err(RecordingError::NotFound) => return forbidden_link(),
        Err(e) => return recording_error(e),
    };
    let len = reader.len();
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        len,
    );
    let (status, first, last) = match range {
        ByteRange::Full => (StatusCode::OK, 0, len.saturating_sub(1)),
        ByteRange::Part { first, last } => (StatusCode::PARTIAL_CONTENT, first, last),
        ByteRange::Unsatisfiable => {
            let mut resp = json_error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                &format!("the recording is {len} bytes"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return resp;
        }
    };
    let count = if len == 0 { 0 } else { last - first + 1 };

    // The blocking reader feeds a small channel; the first piece is read
    // before the response starts, so a recording that fails to decrypt
    // where the body begins gets a JSON error, and a failure later aborts
    // the body (the client sees a short, failed transfer, never garbage).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        if first > 0 {
            if let Err(e) = reader.seek(SeekFrom::Start(first)) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
        let mut left = count;
        while left > 0 {
            let mut buf = vec![0u8; PIECE.min(left as usize)];
            let piece = match reader.read_exact(&mut buf) {
                Ok(()) => Ok(Bytes::from(buf)),
                Err(e) => Err(e),
            };
            let failed = piece.is_err();
            if tx.blocking_send(piece).is_err() || failed {
                return; // client gone, or the error is sent
            }
            left -= PIECE.min(left as usize) as u64;
        }
    });
    let head = if count == 0 {
        None
    } else {
        match rx.recv().await {
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => {
                tracing::error!(recording_id = %rec.id, error = %e, "recording failed to decrypt");
                return recording_error(RecordingError::Corrupt(e.to_string()));
            }
            None => return AppError::Internal("recording reader stopped".into()).into_response(),
        }
    };
    let rest = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let recording_id = rec.id.clone();
    let rest = futures::StreamExt::inspect(rest, move |piece| {
        if let Err(e) = piece {
            tracing::error!(recording_id = %recording_id, error = %e, "recording download aborted mid-body");
        }
    });
    let body = Body::from_stream(futures::StreamExt::chain(
        futures::stream::iter(head.map(Ok::<Bytes, std::io::Error>)),
        rest,
    ));

    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}.wav\"", rec.id)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        use ByteRange::*;
        let r = |h: &str| parse_range(Some(h), 1000);
        assert_eq!(parse_range(None, 1000), Full);
        assert_eq!(r("bytes=0-0"), Part { first: 0, last: 0 });
        assert_eq!(
            r("bytes=10-19"),
            Part {
                first: 10,
                last: 19
            }
        );
        assert_eq!(
            r("bytes=990-5000"),
            Part {
                first: 990,
                last: 999
            }
        );
        assert_eq!(
            r("bytes=500-"),
            Part {
                first: 500,
                last: 999
            }
        );
        assert_eq!(
            r("bytes=-10"),
            Part {
                first: 990,
                last: 999
            }
        );
        assert_eq!(
            r("bytes=-5000"),
            Part {
                first: 0,
                last: 999
            }
        );
        assert_eq!(r("bytes=1000-"), Unsatisfiable);
        assert_eq!(r("bytes=1000-1001"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        // Invalid syntax, other units and several ranges are ignored.
        for h in [
            "bytes=5-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=1-2-3",
            "items=0-1",
            "bytes 0-1",
            "bytes=0-1,5-6",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(r(h), Full, "{h}");
        }
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-1"), 0), Unsatisfiable);
    }
}
