//! A real gateway on 127.0.0.1 with a tenant, and a Twilio-like client.
#![allow(dead_code)]

pub mod mock_twilio;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use callstream::asr::engine::{AsrEngine, EngineConfig};
use callstream::config::Config;
use callstream::gateway::transcription::{SpeechToText, TranscriptionSinks};
use callstream::gateway::{CallContext, SinkFactory, SinkSet};
use callstream::jobs::WorkerPool;
use callstream::media::session::{PcmChunk, WidebandChunk};
use callstream::media::sink::{SpillingSender, TranscriptionInput};
use callstream::providers::twilio::signature;
use callstream::providers::twilio::stream::{frames, StreamTrack};
use callstream::secret::Secret;
use callstream::store::{Role, Store};
use callstream::{AppState, Gateway, ShutdownReport};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "f00dfeedf00dfeedf00dfeedf00dfeed";
pub const STREAM_PATH: &str = "/v1/providers/twilio/stream";

/// Audio captured by the test sinks, per call.
#[derive(Default, Clone)]
pub struct Captured {
    pub pcm: Arc<Mutex<Vec<PcmChunk>>>,
    pub wide: Arc<Mutex<Vec<WidebandChunk>>>,
}

/// Sinks that collect everything in memory (consumers run as tasks, like
/// the real recording and transcription sinks will).
pub struct CaptureSinks(pub Captured);

impl SinkFactory for CaptureSinks {
    fn open(&self, _call: &CallContext) -> SinkSet {
        let (rec_tx, mut rec_rx) = mpsc::channel::<PcmChunk>(64);
        let (asr_tx, mut asr_rx) = mpsc::channel::<TranscriptionInput>(8192);
        let pcm = self.0.pcm.clone();
        let wide = self.0.wide.clone();
        tokio::spawn(async move {
            while let Some(c) = rec_rx.recv().await {
                pcm.lock().unwrap().push(c);
            }
        });
        tokio::spawn(async move {
            while let Some(input) = asr_rx.recv().await {
                if let TranscriptionInput::Wideband(c) = input {
                    wide.lock().unwrap().push(c);
                }
            }
        });
        SinkSet {
            recording: Some(SpillingSender::new(
                rec_tx,
                SpillingSender::<PcmChunk>::DEFAULT_MAX_BACKLOG,
            )),
            transcription: Some(SpillingSender::new(
                asr_tx,
                SpillingSender::<TranscriptionInput>::DEFAULT_MAX_BACKLOG,
            )),
            ..SinkSet::default()
        }
    }
}

/// What every test server starts from: a listener, config in a temp dir,
/// a migrated store with a tenant and its admin key.
struct Base {
    dir: tempfile::TempDir,
    twilio: mock_twilio::MockTwilio,
    listener: tokio::net::TcpListener,
    cfg: Config,
    store: Store,
    tenant_id: String,
    api_key: String,
}

impl Base {
    async fn new(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut cfg = Config::local(addr, dir.path()).unwrap();
        cfg.shutdown_grace_secs = 5;
        // Twilio's REST API, where streams for calls no webhook announced
        // are looked up (a test may point it elsewhere).
        let twilio = mock_twilio::MockTwilio::start(Vec::new()).await;
        cfg.providers.twilio.api_base_url = twilio.base_url.clone();
        tweak(&mut cfg);
        let store = callstream::open_store(&cfg).await.unwrap();
        let tenant = store
            .create_tenant("Acme", Some((ACCOUNT_SID, &Secret::new(AUTH_TOKEN))))
            .await
            .unwrap();
        let key = store
            .create_api_key(&tenant.id, "admin", Role::Admin)
            .await
            .unwrap();
        Self {
            dir,
            twilio,
            listener,
            cfg,
            store,
            tenant_id: tenant.id,
            api_key: key.plaintext.expose().to_string(),
        }
    }

    fn serve(self, state: AppState, jobs: Option<WorkerPool>, captured: Captured) -> TestServer {
        let addr = self.listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let gateway = Gateway {
            state: state.clone(),
            jobs,
        };
        let task = tokio::spawn(callstream::serve(self.listener, gateway, async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            state,
            store: self.store,
            tenant_id: self.tenant_id,
            api_key: self.api_key,
            captured,
            shutdown: Some(tx),
            task: Some(task),
            twilio: self.twilio,
            _dir: self.dir,
        }
    }
}

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub state: AppState,
    pub store: Store,
    pub tenant_id: String,
    pub api_key: String,
    pub captured: Captured,
    /// Job workers, for servers started with [`TestServer::start_gateway`].
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<ShutdownReport>>>,
    /// The Twilio REST stand-in the config points at by default.
    pub twilio: mock_twilio::MockTwilio,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_full(tweak, |_, captured| Arc::new(CaptureSinks(captured))).await
    }

    /// A server whose streams are transcribed live by the real Whisper model.
    pub async fn start_live() -> Self {
        Self::start_full(
            |_| {},
            |state, _| {
                Arc::new(TranscriptionSinks {
                    engine: whisper_engine(),
                    store: state.store.clone(),
                    hub: state.captions.clone(),
                    config: state.config.asr.live(),
                    queue: state.config.stream.transcription_queue,
                    tracker: state.sessions.tracker(),
                    metrics: state.metrics.clone(),
                    admission: callstream::gateway::transcription::LiveAdmission::new(64),
                })
            },
        )
        .await
    }

    pub async fn start_full(
        tweak: impl FnOnce(&mut Config),
        sinks: impl FnOnce(&AppState, Captured) -> Arc<dyn SinkFactory>,
    ) -> Self {
        Self::start_state(tweak, |state, captured| {
            state.sinks = sinks(state, captured);
        })
        .await
    }

    /// As [`TestServer::start_full`], with the whole state to set up
    /// (sinks, recordings, …) before it is served.
    pub async fn start_state(
        tweak: impl FnOnce(&mut Config),
        setup: impl FnOnce(&mut AppState, Captured),
    ) -> Self {
        let base = Base::new(tweak).await;
        let secret = callstream::load_token_secret(&base.cfg).unwrap();
        let captured = Captured::default();
        let mut state = AppState::new(base.store.clone(), base.cfg.clone(), secret);
        setup(&mut state, captured.clone());
        base.serve(state, None, captured)
    }

    /// As [`TestServer::start_state`], with job workers started on the
    /// state (served, and stopped, with it).
    pub async fn start_with_jobs(
        tweak: impl FnOnce(&mut Config),
        jobs: impl FnOnce(&AppState) -> WorkerPool,
    ) -> Self {
        let base = Base::new(tweak).await;
        let secret = callstream::load_token_secret(&base.cfg).unwrap();
        let captured = Captured::default();
        let mut state = AppState::new(base.store.clone(), base.cfg.clone(), secret);
        state.sinks = Arc::new(CaptureSinks(captured.clone()));
        let jobs = jobs(&state);
        base.serve(state, Some(jobs), captured)
    }

    /// The gateway as `callstream serve` assembles it ([`Gateway::build`]):
    /// recordings, live transcription by the real Whisper model (when
    /// `asr.enabled`), job workers.
    pub async fn start_gateway(tweak: impl FnOnce(&mut Config)) -> Self {
        let base = Base::new(tweak).await;
        let engine = base.cfg.asr.enabled.then(whisper_asr_engine);
        let gw = Gateway::build(base.cfg.clone(), base.store.clone(), engine)
            .await
            .unwrap();
        base.serve(gw.state, gw.jobs, Captured::default())
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.addr, STREAM_PATH)
    }

    /// Connects the way Twilio does: upgrade signed with the auth token.
    pub async fn connect_signed(&self) -> Ws {
        let url = self.ws_url();
        let sig = signature::compute(AUTH_TOKEN, &url, &[]);
        self.connect_with(Some(&sig)).await.expect("signed upgrade")
    }

    pub async fn connect_with(
        &self,
        signature: Option<&str>,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut req = self.ws_url().into_client_request().unwrap();
        if let Some(sig) = signature {
            req.headers_mut()
                .insert("X-Twilio-Signature", sig.parse().unwrap());
        }
        tokio_tungstenite::connect_async(req)
            .await
            .map(|(ws, _)| ws)
    }

    /// GET with the tenant's key; returns (status, JSON body).
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        http(self.addr, "GET", path, Some(&self.api_key), None).await
    }

    pub async fn metrics(&self) -> String {
        self.state.metrics.render()
    }

    /// Triggers graceful shutdown and waits for `serve` (sessions, job
    /// workers, retention) to return; says what had to be forced.
    pub async fn shutdown(&mut self) -> ShutdownReport {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("serve returns")
                .unwrap()
                .unwrap(),
            None => ShutdownReport::default(),
        }
    }
}

/// The value of sample `name` (with its labels) in Prometheus text, or 0.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The real Whisper engine (tiny.en), loaded once per test binary.
pub fn whisper_engine() -> Arc<dyn SpeechToText> {
    Arc::new(shared_whisper().clone())
}

/// The same engine as [`whisper_engine`], as the concrete type (batch jobs).
pub fn whisper_asr_engine() -> Arc<AsrEngine> {
    Arc::new(shared_whisper().clone())
}

fn shared_whisper() -> &'static AsrEngine {
    static ENGINE: std::sync::OnceLock<AsrEngine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| {
        let model =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/ggml-tiny.en.bin");
        assert!(
            model.exists(),
            "{} is missing: run scripts/install-model.sh tiny.en",
            model.display()
        );
        AsrEngine::load(EngineConfig {
            model_path: model,
            threads_per_job: 1,
            max_parallel_jobs: 2,
            ..EngineConfig::default()
        })
        .expect("Whisper tiny.en loads")
    })
}

/// A minimal HTTP/1.1 client for the REST API (one request per connection);
/// returns (status, JSON body or null).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let (status, text) = http_text(addr, method, path, key, body).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Like [`http`], with the body as text.
pub async fn http_text(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(key) = key {
        req.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut b = rest;
        while let Some((size, r)) = b.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&r[..n]);
            b = r[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_string()
    };
    (status, body)
}

/// Like [`http_text`] for endpoints that may answer with an endless stream
/// (`/v1/events`): an event stream's head is read and the body left
/// unread (`""`); any other answer (a JSON error) is read whole.
pub async fn http_text_or_stream(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(key) = key {
        req.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before the response head");
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    if text
        .to_ascii_lowercase()
        .contains("content-type: text/event-stream")
    {
        return (status, String::new());
    }
    conn.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// The JFK fixture as base64 μ-law 20 ms frames at 8 kHz.
pub fn jfk_frames() -> Vec<String> {
    callstream::loadgen::mulaw_frames(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/media-fixtures/jfk.wav"
    )))
    .unwrap()
}

pub struct Call {
    pub stream_sid: String,
    pub call_sid: String,
    pub seq: u64,
}

impl Call {
    pub fn new() -> Self {
        Self {
            stream_sid: format!("MZ{:032x}", rand::random::<u128>()),
            call_sid: format!("CA{:032x}", rand::random::<u128>()),
            seq: 1,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn start(&mut self, params: &[(&str, &str)]) -> Message {
        let tracks = [StreamTrack::Inbound, StreamTrack::Outbound];
        Message::text(frames::start(&frames::StartInfo {
            sequence_number: self.next_seq(),
            account_sid: ACCOUNT_SID,
            stream_sid: &self.stream_sid,
            call_sid: &self.call_sid,
            tracks: &tracks,
            custom_parameters: params,
            encoding: "audio/x-mulaw",
            sample_rate: 8000,
            channels: 1,
        }))
    }

    pub fn media(
        &mut self,
        track: StreamTrack,
        chunk: u64,
        timestamp_ms: u64,
        payload: &str,
    ) -> Message {
        let mut text = String::new();
        let seq = self.next_seq();
        frames::media(
            &mut text,
            &self.stream_sid,
            seq,
            track,
            chunk,
            timestamp_ms,
            payload,
        );
        Message::text(text)
    }

    pub fn stop(&mut self) -> Message {
        let seq = self.next_seq();
        Message::text(frames::stop(
            &self.stream_sid,
            seq,
            ACCOUNT_SID,
            &self.call_sid,
        ))
    }

    pub fn dtmf(&mut self, digit: char) -> Message {
        let seq = self.next_seq();
        Message::text(frames::dtmf(
            &self.stream_sid,
            seq,
            StreamTrack::Inbound,
            digit,
        ))
    }

    pub fn mark(&mut self, name: &str) -> Message {
        let seq = self.next_seq();
        Message::text(frames::mark(&self.stream_sid, seq, name))
    }
}

/// Sends both tracks of `frames` (caller and agent) as Twilio would.
pub async fn send_audio(ws: &mut Ws, call: &mut Call, frames: &[String]) {
    send_audio_from(ws, call, frames, 0).await
}

/// Like [`send_audio`], starting at frame `first` (timestamps as if the
/// frames before it had been sent).
pub async fn send_audio_from(ws: &mut Ws, call: &mut Call, frames: &[String], first: usize) {
    for (i, payload) in frames.iter().enumerate().skip(first) {
        let ts = i as u64 * 20;
        ws.feed(call.media(StreamTrack::Inbound, i as u64 + 1, ts, payload))
            .await
            .unwrap();
        ws.feed(call.media(StreamTrack::Outbound, i as u64 + 1, ts, payload))
            .await
            .unwrap();
    }
    ws.flush().await.unwrap();
}

/// Waits for the server's close frame; returns (code, reason).
pub async fn expect_close(ws: &mut Ws) -> (u16, String) {
    let wait = async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(Some(f))) => return (u16::from(f.code), f.reason.to_string()),
                Ok(Message::Close(None)) => return (1005, String::new()),
                Ok(_) => continue,
                Err(_) => return (1006, String::new()),
            }
        }
        (1006, String::new())
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("server closes the stream")
}

/// Polls until `f` holds (the server finishes asynchronously), up to 10 s.
pub async fn eventually<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within 10 s");
}
