//! The `callstream` binary: tenant creation, config validation, and a real
//! `serve` process under load from `callstream loadgen`, then SIGTERM.

use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_callstream");
const SID: &str = "AC00000000000000000000000000000001";
const TOKEN: &str = "cli-test-auth-token";

/// `callstream tenant create NAME` with this file's Twilio account.
fn create_tenant(data: &str, name: &str) -> std::process::Output {
    callstream(&[
        "tenant",
        "create",
        name,
        "--data-dir",
        data,
        "--twilio-account-sid",
        SID,
        "--twilio-auth-token",
        TOKEN,
    ])
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
        "--auth-token",
        TOKEN,
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
    let out = callstream(&[
        "loadgen",
        "--url",
        &url,
        "--account-sid",
        SID,
        "--auth-token",
        "wrong",
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
