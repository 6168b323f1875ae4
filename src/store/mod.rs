//! Persistence: sqlx repositories over SQLite (default, embedded) or
//! PostgreSQL (several gateway nodes). One set of SQL serves both through
//! sqlx's `Any` driver: `$n` placeholders, TEXT ids, BIGINT millisecond
//! timestamps. Every query takes the tenant id; nothing here knows HTTP.

mod api_keys;
mod calls;
mod crm;
mod events;
mod jobs;
mod phone_numbers;
mod policy;
mod recordings;
mod secrets;
mod sessions;
mod tenants;
mod transcripts;
mod usage;
mod users;
mod webhooks;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

pub use api_keys::{ApiKey, NewApiKey, Principal, Role};
pub use calls::{
    Call, CallFilter, CallLog, CallPage, CallRecordUpdate, CallStatus, Direction, OutboundCallRow,
    StreamCall, StreamClaim,
};
pub use crm::{
    Customer, CustomerPage, CustomerUpdate, NewCustomer, NewTicket, Ticket, TicketFilter,
    TicketPage, TicketStatus, TicketUpdate,
};
pub use events::{EventFanout, EventNotice, EventRetention, EventType, LocalFanout, TenantEvent};
pub use jobs::{BatchTranscript, Job, JobCount, JobStatus, NewJob};
pub use phone_numbers::{NumberStatus, PhoneNumber};
pub use policy::{CallPolicy, DataPath};
pub use recordings::{
    NewRecording, NewRecordingKey, Recording, RecordingKey, RecordingKeyStatus, RecordingOutcome,
    RecordingSource, RecordingStatus,
};
pub use secrets::ResealCount;
pub use sessions::{
    check_password_rules, csrf_token, NewSession, SessionLifetime, MAX_PASSWORD_BYTES,
    MIN_PASSWORD_CHARS, SESSION_KEY_ID,
};
pub use tenants::{Quotas, Tenant, TenantSettings, TwilioCredentials};
pub use transcripts::{Segment, Transcript, TranscriptStatus};
pub use usage::{CallUsage, UsageTotals};
pub use users::{NewUser, User};
pub use webhooks::{transition, CallEventOutcome, ProviderCallEvent, Transition};

/// Errors from the storage layer. Messages never carry row contents.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored value is invalid: {0}")]
    Corrupt(String),
    #[error("no master key to seal or open provider secrets with")]
    NoMasterKey,
    #[error("stored secrets were sealed by master key {sealed_by}, but the configured master key is {configured}")]
    WrongMasterKey {
        sealed_by: String,
        configured: String,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database the pool talks to (the SQL is shared, the migrations are not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite allows one writer at a time. Queueing writers here, in order,
    /// beats letting them spin on SQLITE_BUSY: under a burst of call starts
    /// the busy handler's sleeps made writes time out. `None` on PostgreSQL.
    write_lock: Option<Arc<tokio::sync::Mutex<()>>>,
    /// Bumped whenever this process adds a tenant or changes its provider
    /// credentials, so credential caches reload without asking the database.
    tenants_generation: Arc<std::sync::atomic::AtomicU64>,
    /// The tenant event log's fan-out and retention (see [`events`]).
    events: Arc<events::EventLog>,
    /// Seals and opens provider secrets ([`Store::with_master_key`]);
    /// without it a store can still do everything else.
    master: Option<Arc<crate::secret::MasterKey>>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl Store {
    /// Connects and brings the schema up to date. SQLite files (and their
    /// directory) are created on first use.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let file = (backend == Backend::Sqlite)
            .then(|| sqlite_path(url))
            .flatten();
        if let Some(file) = &file {
            create_private_sqlite(file)?;
        }
        let mut options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            // WAL lets readers run beside the writer; NORMAL is durable across
            // process crashes in WAL mode; busy_timeout turns writer contention
            // into a short wait instead of an error.
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await?;
        if let Some(file) = &file {
            // SQLite gives -wal and -shm the main file's mode, but files
            // made by an older version may be looser: tighten all three.
            for suffix in ["", "-wal", "-shm"] {
                let mut path = file.clone().into_os_string();
                path.push(suffix);
                crate::secret::tighten_mode(std::path::Path::new(&path), 0o600)
                    .map_err(|e| file_error(file, e))?;
            }
        }
        let write_lock =
            (backend == Backend::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(())));
        let store = Self {
            pool,
            backend,
            write_lock,
            tenants_generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            events: Arc::default(),
            master: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Changes whenever this process adds a tenant or changes a tenant's
    /// provider credentials (see [`Store::tenants_fingerprint`] for changes
    /// made by other processes).
    pub fn tenants_generation(&self) -> u64 {
        self.tenants_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn tenants_changed(&self) {
        self.tenants_generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// Held for the duration of one write statement (SQLite only).
    async fn writer(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.write_lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        }
    }

    /// The id of the master key sealing provider secrets, if one is set.
    pub fn master_key_id(&self) -> Option<&str> {
        self.master.as_deref().map(|m| m.id())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a transaction that writes. On SQLite it takes the write lock
    /// at `BEGIN IMMEDIATE`, where `busy_timeout` applies: a transaction
    /// that an early `return Err` dropped is rolled back by sqlx a moment
    /// later, and a deferred `BEGIN` that read first and then tried to
    /// write beside it failed at once with "database is locked" instead of
    /// waiting those few milliseconds.
    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates the database file owner-only before SQLite opens it (it would
/// create it 0644 under the usual umask), in an owner-only directory when
/// the directory is new.
fn create_private_sqlite(file: &std::path::Path) -> Result<()> {
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            crate::secret::create_private_dir(parent).map_err(|e| file_error(parent, e))?;
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(file).map_err(|e| file_error(file, e))?;
    Ok(())
}

fn file_error(path: &std::path::Path, e: std::io::Error) -> StoreError {
    StoreError::Database(sqlx::Error::Configuration(
        format!("cannot create {}: {e}", path.display()).into(),
    ))
}

fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| std::path::PathBuf::from(path))
}

/// Milliseconds since the Unix epoch: the unit of every stored timestamp.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// A sortable unique id (UUIDv7: time-ordered, so cursors can page by id).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Reads an enum stored as text.
fn get_enum<T: FromStr>(row: &AnyRow, col: &str) -> Result<T> {
    let raw: String = row.try_get(col)?;
    raw.parse()
        .map_err(|_| StoreError::Corrupt(format!("{col} has unknown value")))
}

/// Declares a text-backed enum with `as_str`/`FromStr`/serde in one place so
/// the database, the API and the code agree on spelling.
macro_rules! text_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name { $($(#[$vmeta])* #[serde(rename = $text)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} `{other}`", stringify!($name))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use text_enum;

#[cfg(test)]
pub(crate) mod testing {
    use super::{Direction, Store, StreamCall};

    /// An inbound Twilio stream's call, as the tests start one.
    pub fn stream_call<'a>(call_sid: &'a str, stream: &'a str) -> StreamCall<'a> {
        StreamCall {
            provider: "twilio",
            external_call_id: call_sid,
            stream_id: stream,
            direction: Direction::Inbound,
            from_number: None,
            to_number: None,
        }
    }

    /// A fresh migrated store, with what keeps it alive (its temp dir).
    pub struct TestStore {
        pub store: Store,
        _dir: Option<tempfile::TempDir>,
    }

    impl std::ops::Deref for TestStore {
        type Target = Store;
        fn deref(&self) -> &Store {
            &self.store
        }
    }

    /// `store` sealing provider secrets with a fresh master key.
    async fn sealing(store: Store) -> Store {
        let key = std::sync::Arc::new(crate::secret::MasterKey::generate());
        store.with_master_key(key).await.expect("master key")
    }

    /// A fresh migrated SQLite store in a temp dir.
    pub async fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        TestStore {
            store: sealing(Store::connect(&url).await.expect("connect")).await,
            _dir: Some(dir),
        }
    }

    /// A fresh migrated PostgreSQL store in its own schema, when
    /// `TEST_POSTGRES_URL` names a server. CI must set it: there a
    /// missing server fails the tests instead of silently skipping them.
    pub async fn postgres() -> Option<TestStore> {
        let Ok(base) = std::env::var("TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the store tests on PostgreSQL: set TEST_POSTGRES_URL"
            );
            return None;
        };
        use sqlx::Executor;
        sqlx::any::install_default_drivers();
        let schema = format!("cstest_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::AnyPool::connect(&base)
            .await
            .expect("postgres reachable");
        admin
            .execute(format!("CREATE SCHEMA {schema}").as_str())
            .await
            .expect("create schema");
        admin.close().await;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        Some(TestStore {
            store: sealing(Store::connect(&url).await.expect("connect")).await,
            _dir: None,
        })
    }

    /// Every backend available: SQLite always, PostgreSQL when configured.
    pub async fn stores() -> Vec<TestStore> {
        let mut all = vec![sqlite().await];
        all.extend(postgres().await);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite://data/x.db?mode=rwc").unwrap(),
            std::path::PathBuf::from("data/x.db")
        );
        assert!(sqlite_path("sqlite::memory:").is_none());
    }

    #[tokio::test]
    async fn migrates_fresh_database_twice() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        Store::connect(&url).await.unwrap().close().await;
        let again = Store::connect(&url).await.unwrap();
        assert_eq!(again.backend(), Backend::Sqlite);
        if let Some(pg) = testing::postgres().await {
            assert_eq!(pg.backend(), Backend::Postgres);
            pg.migrate().await.unwrap();
        }
    }
}
