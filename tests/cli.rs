//! The `callstream` binary: tenant creation, config validation, and a real
//! `serve` process under load from `callstream loadgen`, then SIGTERM.

use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_callstream");
const SID: &str = "AC00000000000000000000000000000001";
const TOKEN: &str = "cli-test-auth-token";

/// `callstream tenant create NAME` with this file's Twilio account, the
/// token from a file.
fn create_tenant(data: &str, name: &str) -> std::process::Output {
    let token = token_file(data);
    callstream(&[
        "tenant",
        "create",
        name,
        "--data-dir",
        data,
        "--twilio-account-sid",
        SID,
        "--twilio-auth-token-file",
        &token,
    ])
}

/// A file in the data dir holding [`TOKEN`] (with the newline `echo`
/// leaves), for the `--…-file` flags.
fn token_file(data: &str) -> String {
    std::fs::create_dir_all(data).unwrap();
    let path = format!("{data}/auth.token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    path
}

fn callstream(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("CALLSTREAM_LOG")
        .output()
        .expect("runs")
}

#[test]
fn tenant_create_prints_one_json_object_with_a_working_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = create_tenant(data, "Acme");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.trim().lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(v["tenant_id"].as_str().unwrap().len() >= 32);
    assert!(v["api_key"].as_str().unwrap().starts_with("csk_"));
    assert_eq!(v["twilio_account_sid"], SID);
    // The auth token is never echoed, and the key is stored only hashed.
    assert!(!stdout.contains(TOKEN));
    let db = std::fs::read(dir.path().join("callstream.db")).unwrap();
    let key = v["api_key"].as_str().unwrap();
    assert!(!db.windows(key.len()).any(|w| w == key.as_bytes()));

    // Settings: shown, then changed.
    let tenant = v["tenant_id"].as_str().unwrap();
    let settings = |out: std::process::Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let out = callstream(&["tenant", "settings", tenant, "--data-dir", data]);
    let shown = settings(out);
    assert_eq!(shown["pii_redaction"], false);
    assert_eq!(shown["record_calls"], true);
    let out = callstream(&[
        "tenant",
        "settings",
        tenant,
        "--data-dir",
        data,
        "--pii-redaction",
        "true",
    ]);
    let changed = settings(out);
    assert_eq!(changed["pii_redaction"], true);
    // Only that switch changed.
    let mut expected = shown.clone();
    expected["pii_redaction"] = true.into();
    assert_eq!(changed, expected);
    assert!(
        !callstream(&["tenant", "settings", "nope", "--data-dir", data])
            .status
            .success()
    );

    // The same account cannot belong to two tenants.
    let again = create_tenant(data, "Other");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already belongs"));
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The database's files (main, -wal, -shm: SQLite keeps fresh writes in
/// the WAL), those that exist.
fn db_files(data: &std::path::Path) -> Vec<std::path::PathBuf> {
    ["callstream.db", "callstream.db-wal", "callstream.db-shm"]
        .iter()
        .map(|f| data.join(f))
        .filter(|p| p.exists())
        .collect()
}

fn on_disk(data: &std::path::Path, needle: &str) -> bool {
    db_files(data).iter().any(|f| {
        let bytes = std::fs::read(f).unwrap();
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    })
}

#[tokio::test]
async fn auth_tokens_stay_off_argv_logs_and_disk_and_survive_master_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();

    // Given on argv: refused, naming both ways that keep it out of `ps`.
    let out = callstream(&[
        "tenant",
        "create",
        "Acme",
        "--data-dir",
        data_s,
        "--twilio-account-sid",
        SID,
        "--twilio-auth-token",
        TOKEN,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--twilio-auth-token-file") && err.contains("--twilio-auth-token-stdin"),
        "{err}"
    );
    assert!(!err.contains(TOKEN), "the refusal echoes the token: {err}");
    assert!(
        !data.join("callstream.db").exists(),
        "refused before opening anything"
    );

    // From stdin, debug logging on: the process's argv, as `ps` shows it,
    // never holds the token (read while it waits for stdin).
    let mut child = Command::new(BIN)
        .args(["tenant", "create", "Acme", "--data-dir", data_s])
        .args(["--twilio-account-sid", SID, "--twilio-auth-token-stdin"])
        .env("CALLSTREAM_LOG", "debug")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let cmdline = loop {
        // Until the exec: a forked child shows the test binary's argv.
        let c = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
        if c.windows(b"--twilio-auth-token-stdin".len())
            .any(|w| w == b"--twilio-auth-token-stdin")
        {
            break c;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(!cmdline.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()));
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{TOKEN}").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains(TOKEN) && !String::from_utf8_lossy(&out.stdout).contains(TOKEN));
    let tenant: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tenant_id = tenant["tenant_id"].as_str().unwrap();

    // At rest: sealed, the data dir and the database owner-only.
    assert!(
        !on_disk(&data, TOKEN),
        "plaintext token in the database files"
    );
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("keys").join("master.key")), 0o600);
    let files = db_files(&data);
    assert!(!files.is_empty(), "{files:?}");
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    // Looser modes left by an older version are tightened at the next start.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in &files {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = callstream(&["tenant", "settings", tenant_id, "--data-dir", data_s]);
    assert!(out.status.success());
    assert_eq!(mode(&data), 0o700);
    for f in db_files(&data) {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }

    // Master key rotation: recording keys and tokens re-sealed, the key
    // file replaced; the same recording key and token read back.
    let export = || {
        let out = callstream(&[
            "recording",
            "key",
            "export",
            "--tenant",
            tenant_id,
            "--data-dir",
            data_s,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let identity = export();
    let old_key = std::fs::read_to_string(data.join("keys").join("master.key")).unwrap();
    let out = callstream(&["keys", "rotate-master", "--data-dir", data_s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rotated["recording_keys"], 1, "{rotated}");
    assert_eq!(rotated["provider_secrets"], 1, "{rotated}");
    assert_ne!(rotated["master_key_id"], rotated["old_master_key_id"]);
    let new_key = std::fs::read_to_string(data.join("keys").join("master.key")).unwrap();
    assert_ne!(old_key, new_key);
    assert!(!new_key.contains(&old_key.trim().to_string()));
    assert_eq!(mode(&data.join("keys").join("master.key")), 0o600);
    assert!(!data.join("keys").join("master.key.next").exists());
    assert_eq!(export(), identity);
    assert!(!on_disk(&data, TOKEN));
    let cfg = callstream::config::Config::local("127.0.0.1:0".parse().unwrap(), &data).unwrap();
    let store = callstream::open_store(&cfg).await.unwrap();
    assert_eq!(
        store.sealing_key_ids().await.unwrap(),
        vec![rotated["master_key_id"].as_str().unwrap().to_string()]
    );
    let creds = store.twilio_credentials_for(SID).await.unwrap();
    assert_eq!(creds.auth_token.expose(), TOKEN);
    store.close().await;

    // The old key opens nothing any more.
    std::fs::write(data.join("keys").join("master.key"), &old_key).unwrap();
    let out = callstream(&[
        "recording",
        "key",
        "export",
        "--tenant",
        tenant_id,
        "--data-dir",
        data_s,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("master key"));
}

#[tokio::test]
async fn user_create_prints_a_key_acting_with_the_role() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = create_tenant(data, "Acme");
    assert!(out.status.success());
    let tenant: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tenant_id = tenant["tenant_id"].as_str().unwrap();
    // The first admin key belongs to an admin user.
    assert!(tenant["user_id"].as_str().unwrap().len() >= 32);
    assert_eq!(tenant["role"], "admin");

    let out = callstream(&[
        "user",
        "create",
        "--data-dir",
        data,
        "--tenant",
        tenant_id,
        "--role",
        "agent",
        "--name",
        "Ann Agent",
        "--email",
        "Ann@Example.com",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.trim().lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["tenant_id"], tenant_id);
    assert_eq!(v["role"], "agent");
    assert_eq!(v["name"], "Ann Agent");
    assert_eq!(v["email"], "ann@example.com");
    let user_id = v["user_id"].as_str().unwrap();
    let key = v["api_key"].as_str().unwrap();
    assert!(key.starts_with("csk_"));
    // Stored hashed only; the key authenticates as that user, as an agent.
    let db_path = dir.path().join("callstream.db");
    let db = std::fs::read(&db_path).unwrap();
    assert!(!db.windows(key.len()).any(|w| w == key.as_bytes()));
    let store = callstream::store::Store::connect(&format!("sqlite://{}", db_path.display()))
        .await
        .unwrap();
    let who = store.authenticate_api_key(key).await.unwrap().unwrap();
    assert_eq!(
        (who.tenant_id.as_str(), who.user_id.as_str(), who.role),
        (tenant_id, user_id, callstream::store::Role::Agent)
    );
    store.close().await;

    // Without --name the user is named after the role.
    let out = callstream(&[
        "user",
        "create",
        "--data-dir",
        data,
        "--tenant",
        tenant_id,
        "--role",
        "supervisor",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["name"].as_str(), v["role"].as_str()),
        (Some("supervisor"), Some("supervisor"))
    );

    // Refusals: clear message, non-zero exit, nothing printed on stdout.
    for (args, says) in [
        (
            vec!["--tenant", tenant_id, "--role", "owner"],
            "use admin, supervisor or agent",
        ),
        (
            vec!["--tenant", "no-such-tenant", "--role", "agent"],
            "unknown tenant `no-such-tenant`",
        ),
        (
            vec![
                "--tenant",
                tenant_id,
                "--role",
                "agent",
                "--email",
                "not-an-email",
            ],
            "--email",
        ),
        (
            vec!["--tenant", tenant_id, "--role", "agent", "--name", "  "],
            "--name",
        ),
        (
            vec![
                "--tenant",
                tenant_id,
                "--role",
                "agent",
                "--email",
                "ann@example.com",
            ],
            "already exists",
        ),
        (vec!["--role", "agent"], "--tenant"),
    ] {
        let mut all = vec!["user", "create", "--data-dir", data];
        all.extend(&args);
        let out = callstream(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn bad_configuration_fails_at_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "listen = \"127.0.0.1:0\"\n[stream]\nmax_mesage_bytes = 10\n",
    )
    .unwrap();
    let out = callstream(&["serve", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_mesage_bytes"), "{err}");

    let out = Command::new(BIN)
        .args(["serve", "--data-dir", dir.path().to_str().unwrap()])
        .env("CALLSTREAM_STREAM__MAX_STREAMS", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CALLSTREAM_STREAM__MAX_STREAMS"));

    let out = callstream(&["serve", "--public-url", "not a url"]);
    assert!(!out.status.success());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn loadgen_against_serve_then_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = create_tenant(data, "Load");
    assert!(out.status.success());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Debug logging on, to check below that no secret reaches the log.
    let log_path = dir.path().join("serve.log");
    let mut server = Command::new(BIN)
        .args(["serve", "--data-dir", data, "--listen", &listen])
        .env("CALLSTREAM_LOG", "debug")
        // loadgen invents its calls; no Twilio API here to look them up.
        .env("CALLSTREAM_STREAM__ACCEPT_UNANNOUNCED_CALLS", "true")
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(&listen).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(up, "serve listens");

    let audio = concat!(env!("CARGO_MANIFEST_DIR"), "/media-fixtures/jfk.wav");
    let url = format!("ws://{listen}/v1/providers/twilio/stream");
    let out = callstream(&[
        "loadgen",
        "--url",
        &url,
        "--account-sid",
        SID,
        "--auth-token-file",
        &token_file(data),
        "--streams",
        "4",
        "--duration",
        "2",
        "--audio",
        audio,
        "--ramp",
        "0.2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["streams"], 4, "{report}");
    assert_eq!(report["frames_sent"], 4 * 2 * 100);
    assert_eq!(report["frames_received"], 4 * 2 * 100);
    assert_eq!(report["frames_dropped"], 0);
    assert_eq!(report["errors"], 0);
    assert!(report["p99_ms"].as_f64().unwrap() > 0.0);
    assert!(report["p50_ms"].as_f64().unwrap() <= report["p99_ms"].as_f64().unwrap());

    // A wrong auth token: every stream refused, and reported as errors.
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "wrong").unwrap();
    let out = callstream(&[
        "loadgen",
        "--url",
        &url,
        "--account-sid",
        SID,
        "--auth-token-file",
        wrong.to_str().unwrap(),
        "--streams",
        "2",
        "--duration",
        "1",
        "--audio",
        audio,
        "--ramp",
        "0",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["streams"], 0);
    assert_eq!(report["errors"], 2);

    // SIGTERM: a graceful exit.
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(s) = server.try_wait().unwrap() {
            exited = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = server.kill();
    assert!(exited.expect("serve exits after SIGTERM").success());

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("stream started"), "the log is the server's");
    assert!(!log.contains(TOKEN), "auth token in the log");
}
