//! Wiring: one [`App`] per process, running the HTTP API, the step workers, or both (by
//! [`Role`]), on a listener it is given (port 0 in tests) and with a clean shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use std::str::FromStr;

use anyhow::Context;
use poem::{
    Server,
    listener::{Acceptor, TcpAcceptor},
};
use secrecy::ExposeSecret;

use crate::{
    config::{Config, GeneratorKind},
    flashcards::{Generator, OpenAiConfig, OpenAiGenerator, RulesGenerator},
    http::{self, HttpState, health::OpsState, oauth::NotionConnect, tls::TlsConfig},
    metrics::Metrics,
    notion::{ApiFlavor, LEGACY_NOTION_VERSION, NotionClient, NotionClientConfig},
    ratelimit::RateLimiter,
    secrets::ServiceSecrets,
    store::{BackendKind, DebounceWindow, PoolSettings, Store},
    tokens::NotionTokens,
    webhook::Intake,
    workflow::{
        Engine,
        definition::Definitions,
        engine::EngineSettings,
        queue::{self, WorkerSettings},
        reconcile::{self, Reconciler},
        retention,
        steps::{self, StepDeps},
        sweeper,
    },
};

/// What this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// HTTP API and workers in one process (the default).
    Serve,
    /// HTTP only.
    Api,
    /// Workers only; run as many as you like against one PostgreSQL.
    Worker,
}

impl Role {
    /// The subcommand that runs this role.
    pub fn name(self) -> &'static str {
        match self {
            Role::Serve => "serve",
            Role::Api => "api",
            Role::Worker => "worker",
        }
    }

    fn runs_http(self) -> bool {
        matches!(self, Role::Serve | Role::Api)
    }
    fn runs_workers(self) -> bool {
        matches!(self, Role::Serve | Role::Worker)
    }
}

pub struct App {
    config: Config,
    role: Role,
    store: Store,
    secrets: ServiceSecrets,
    definitions: Definitions,
    notion: NotionClient,
    /// The flashcard generator and the name it goes by in content hashes.
    generator: (Generator, String),
    acceptor: Option<TcpAcceptor>,
    /// `OPS_BIND_ADDR`'s: the ops endpoints alone, over plain HTTP.
    ops_acceptor: Option<TcpAcceptor>,
    /// Serve HTTPS on the acceptor (`TLS_CERT_PATH`, `TLS_KEY_PATH`).
    tls: Option<TlsConfig>,
    /// With SQLite: held for the life of the process, so no second process opens the file.
    _single_process: Option<std::fs::File>,
}

/// How long start-up waits for the database before giving up.
const STARTUP_DB_WAIT: Duration = Duration::from_secs(60);
/// An HTTP connection with no traffic for this long is closed (its in-flight requests finish
/// first), so idle or stalled clients do not hold connections forever.
const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long shutdown waits for the database connections to close, after the work has stopped.
const STORE_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The configured flashcard generator, and its name in content hashes.
fn build_generator(config: &Config) -> anyhow::Result<(Generator, String)> {
    Ok(match config.flashcard_generator {
        GeneratorKind::Rules => (Generator::Rules(RulesGenerator), "rules".to_owned()),
        GeneratorKind::OpenAi => {
            let (Some(base_url), Some(api_key), Some(model)) =
                (config.openai_base_url.clone(), config.openai_api_key.clone(), config.openai_model.clone())
            else {
                anyhow::bail!(
                    "FLASHCARD_GENERATOR=openai needs OPENAI_BASE_URL, OPENAI_API_KEY and OPENAI_MODEL"
                );
            };
            let id = format!("openai:{model}");
            let generator = OpenAiGenerator::new(OpenAiConfig {
                base_url,
                api_key,
                model,
                timeout: OpenAiConfig::DEFAULT_TIMEOUT,
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            (Generator::OpenAi(generator), id)
        }
    })
}

impl App {
    /// Connects to the database, applies migrations, loads secrets and binds `config.bind_addr`
    /// (if the role serves HTTP).
    pub async fn build(config: Config, role: Role) -> anyhow::Result<Self> {
        let listener = if role.runs_http() {
            let listener = tokio::net::TcpListener::bind(config.bind_addr)
                .await
                .with_context(|| format!("cannot listen on BIND_ADDR {}", config.bind_addr))?;
            Some(listener)
        } else {
            None
        };
        Self::build_with_listener(config, role, listener).await
    }

    /// Like [`App::build`], on a listener the caller bound (tests bind port 0).
    pub async fn build_with_listener(
        config: Config,
        role: Role,
        listener: Option<tokio::net::TcpListener>,
    ) -> anyhow::Result<Self> {
        let tls = match (&config.tls_cert_path, &config.tls_key_path) {
            (Some(cert), Some(key)) if listener.is_some() => Some(TlsConfig::load(cert, key)?),
            _ => None,
        };
        let ops_listener = match config.ops_bind_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on OPS_BIND_ADDR {addr}"))?,
            ),
            None => None,
        };
        let definitions = Definitions::load(config.workflow_file.as_deref(), config.notion_max_retries)?;
        let notion = NotionClient::new(NotionClientConfig {
            base_url: config.notion_api_base_url.clone(),
            version: config.notion_version.clone(),
            timeout: config.notion_timeout,
        })?;
        let generator = build_generator(&config)?;
        let single_process = match config.database_backend() {
            BackendKind::Sqlite => Some(claim_sqlite_file(&config, role)?),
            BackendKind::Postgres => None,
        };
        // No step leaves its transaction idle for longer than the step may run; a session idle
        // in one for that long plus a lease belongs to a worker that hung or was cut off.
        let idle_in_transaction = definitions.longest_timeout() + config.step_lease;
        let store = connect_and_migrate(&config, Some(idle_in_transaction)).await?;
        // Also checks TOKEN_ENCRYPTION_KEY against the secrets stored (or, during a rotation,
        // moves them to it) before anything new is stored under it.
        let secrets = ServiceSecrets::load(&config, &store, role.runs_http()).await?;
        if config.oauth_lacks_redirect_uri() {
            tracing::warn!(
                "NOTION_CLIENT_ID and NOTION_CLIENT_SECRET are set but NOTION_REDIRECT_URI is not: OAuth \
                 \"Connect Notion\" answers 503 oauth_not_configured until it is (webhooks, syncs and \
                 tokens set with PUT /api/users/{{id}}/notion-token are unaffected)"
            );
        }
        let acceptor = listener.map(TcpAcceptor::from_tokio).transpose()?;
        let ops_acceptor = ops_listener.map(TcpAcceptor::from_tokio).transpose()?;
        Ok(Self {
            config,
            role,
            store,
            secrets,
            definitions,
            notion,
            generator,
            acceptor,
            ops_acceptor,
            tls,
            _single_process: single_process.flatten(),
        })
    }

    /// The address the HTTP API listens on, if this role serves HTTP.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        socket_addr(self.acceptor.as_ref()?)
    }

    /// The address the ops endpoints alone listen on (`OPS_BIND_ADDR`), if set.
    pub fn ops_local_addr(&self) -> Option<SocketAddr> {
        socket_addr(self.ops_acceptor.as_ref()?)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn debounce_window(&self) -> DebounceWindow {
        DebounceWindow { quiet: self.config.debounce, max_wait: self.config.debounce_max_wait }
    }

    /// Runs until `shutdown` resolves, then stops taking requests and jobs and waits up to
    /// `SHUTDOWN_TIMEOUT_SECONDS` for in-flight work.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: no new requests or jobs are taken");
            let _ = stop_tx.send(true);
        });

        let timeout = self.config.shutdown_timeout;
        let debounce = self.debounce_window();
        // One registry per process, shared by the API and the workers.
        let metrics = Arc::new(Metrics::default());
        let http = self.acceptor.map(|acceptor| {
            let state = Arc::new(HttpState {
                store: self.store.clone(),
                intake: Intake::new(
                    self.store.clone(),
                    self.secrets.cipher.clone(),
                    self.config.notion_webhook_secret.clone(),
                ),
                api_token: self.secrets.api_token.clone(),
                cipher: self.secrets.cipher.clone(),
                debounce,
                metrics: metrics.clone(),
                oauth: NotionConnect::new(&self.config, self.notion.clone(), &self.secrets.cipher),
                rejections: Default::default(),
            });
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            if let Some(addr) = socket_addr(&acceptor) {
                tracing::info!(%addr, scheme, "HTTP API listening; Swagger UI at /docs");
            }
            let routes = http::routes(state);
            match &self.tls {
                Some(tls) => tokio::spawn(
                    Server::new_with_acceptor(tls.acceptor(acceptor))
                        .idle_timeout(HTTP_IDLE_TIMEOUT)
                        .run_with_graceful_shutdown(routes, stopped(), Some(timeout)),
                ),
                None => tokio::spawn(
                    Server::new_with_acceptor(acceptor)
                        .idle_timeout(HTTP_IDLE_TIMEOUT)
                        .run_with_graceful_shutdown(routes, stopped(), Some(timeout)),
                ),
            }
        });
        let ops = self.ops_acceptor.map(|acceptor| {
            if let Some(addr) = socket_addr(&acceptor) {
                tracing::info!(%addr, "ops endpoints listening (/healthz, /readyz, /metrics)");
            }
            let state = Arc::new(OpsState::new(self.store.clone(), metrics.clone()));
            tokio::spawn(
                Server::new_with_acceptor(acceptor)
                    .idle_timeout(HTTP_IDLE_TIMEOUT)
                    .run_with_graceful_shutdown(http::ops_routes(state), stopped(), Some(timeout)),
            )
        });
        let worker = self.role.runs_workers().then(|| {
            // One per process: its per-user locks keep this process's refreshes from racing.
            let tokens = Arc::new(NotionTokens::new(
                self.store.clone(),
                self.secrets.cipher.clone(),
                self.notion.clone(),
                self.config.notion_client_id.clone().zip(self.config.notion_client_secret.clone()),
            ));
            let deps = StepDeps {
                store: self.store.clone(),
                limiter: RateLimiter::new(self.store.clone(), self.config.notion_rate_limit_per_minute),
                debounce,
                notion: self.notion.clone(),
                tokens: tokens.clone(),
                generator: self.generator.0.clone(),
                generator_id: self.generator.1.clone(),
                metrics: metrics.clone(),
                fetch_budget: steps::attempt_budget(
                    self.definitions.policy("fetch").timeout,
                    self.config.notion_timeout,
                ),
                generate_budget: steps::attempt_budget(
                    self.definitions.policy("generate").timeout,
                    OpenAiConfig::DEFAULT_TIMEOUT,
                ),
                winding_down: Arc::default(),
            };
            let engine = Engine::new(
                deps,
                self.definitions.clone(),
                EngineSettings {
                    lease: self.config.step_lease,
                    retry_base_delay: self.config.retry_base_delay,
                    retry_max_delay: self.config.retry_max_delay,
                },
            );
            let sweep_every = (self.config.step_lease / 2).max(Duration::from_millis(200));
            tokio::spawn(sweeper::run(self.store.clone(), metrics.clone(), sweep_every, stopped()));
            tokio::spawn(retention::run(self.store.clone(), self.config.retention, stopped()));
            let reconciler = Reconciler {
                store: self.store.clone(),
                limiter: RateLimiter::new(self.store.clone(), self.config.notion_rate_limit_per_minute),
                notion: self.notion.clone(),
                tokens,
                debounce,
                flavor: if self.notion.version() == LEGACY_NOTION_VERSION {
                    ApiFlavor::LegacyDatabase
                } else {
                    ApiFlavor::DataSources
                },
                interval: self.config.reconcile_interval,
                metrics: metrics.clone(),
            };
            tokio::spawn(reconcile::run(reconciler, stopped()));
            let settings = WorkerSettings {
                name: queue::unique_worker_name(),
                concurrency: self.config.worker_concurrency,
                poll_interval: self.config.worker_poll_interval,
            };
            tracing::info!(worker = %settings.name, concurrency = settings.concurrency, "step worker started");
            tokio::spawn(queue::run_worker(self.store.clone(), engine, settings, stopped(), timeout))
        });

        if let Some(http) = http {
            http.await.context("HTTP server task")?.context("HTTP server")?;
        }
        if let Some(worker) = worker {
            worker.await.context("worker task")?.context("worker")?;
        }
        if let Some(ops) = ops {
            ops.await.context("ops HTTP server task")?.context("ops HTTP server")?;
        }
        // Bounded: closing waits for every connection to come back, and one left mid-statement
        // on a server gone silent would not for as long as the kernel keeps its socket (about
        // 15 minutes). Exiting closes the sockets anyway.
        if tokio::time::timeout(STORE_CLOSE_TIMEOUT, self.store.close()).await.is_err() {
            tracing::warn!(
                timeout_seconds = STORE_CLOSE_TIMEOUT.as_secs(),
                "database connections still busy at exit; leaving them to the operating system"
            );
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The socket address an acceptor listens on.
fn socket_addr(acceptor: &TcpAcceptor) -> Option<SocketAddr> {
    acceptor.local_addr().into_iter().next()?.as_socket_addr().copied()
}

/// SQLite serves one process: refuses the roles that split the service across processes, and
/// takes an exclusive lock next to the database file so that a second process on the same file
/// fails at start-up with a clear message instead of competing for it. Creates the file's
/// directory. The lock lives as long as the returned file (`None`: an in-memory database).
fn claim_sqlite_file(config: &Config, role: Role) -> anyhow::Result<Option<std::fs::File>> {
    if role != Role::Serve {
        anyhow::bail!(
            "the `{}` role runs part of the service in its own process, and several processes need \
             PostgreSQL (set DATABASE_URL=postgres://...). With SQLite, run `cognie-sync serve` \
             (the default): one process with the HTTP API and the workers",
            role.name()
        );
    }
    let Some(file) = sqlite_file_with_its_directory(config)? else { return Ok(None) };
    let lock_path = file.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another cognie-sync process is using {} (SQLite serves one process; to run several, \
             use PostgreSQL)",
            file.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
        }
    }
    tracing::info!(path = %file.display(), "storing everything in this SQLite file (the embedded default)");
    Ok(Some(lock))
}

/// The SQLite file DATABASE_URL names, with its directory created (SQLite creates a missing
/// file, not a missing directory). `None`: an in-memory database.
///
/// What this creates is its owner's only (a directory 0700, an empty database file 0600, from
/// which SQLite gives its `-wal` and `-shm` files the same mode): the file holds users' emails,
/// their notes' text and webhook payloads. A directory or file that exists is left as it is.
fn sqlite_file_with_its_directory(config: &Config) -> anyhow::Result<Option<std::path::PathBuf>> {
    let url = config.database_url();
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url.expose_secret())
        .context("DATABASE_URL is not a valid sqlite:// URL")?;
    let file = options.get_filename();
    if file.as_os_str().is_empty() || file.to_string_lossy().contains(":memory:") {
        return Ok(None);
    }
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut new_file = std::fs::OpenOptions::new();
    new_file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut new_file, 0o600);
    match new_file.open(file) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", file.display())),
    }
    Ok(Some(file.to_path_buf()))
}

/// Connects and applies migrations, waiting for a database that is still starting.
/// `idle_in_transaction_timeout`: see [`PoolSettings::idle_in_transaction_timeout`].
pub async fn connect_and_migrate(
    config: &Config,
    idle_in_transaction_timeout: Option<Duration>,
) -> anyhow::Result<Store> {
    if config.database_backend() == BackendKind::Sqlite {
        // `serve` has made it already; `migrate` on a fresh machine has not.
        sqlite_file_with_its_directory(config)?;
    }
    let settings = PoolSettings {
        url: config.database_url(),
        max_connections: config.database_max_connections,
        acquire_timeout: config.database_acquire_timeout,
        // SQLite files are always created; a PostgreSQL database is created by its operator.
        create_database: false,
        idle_in_transaction_timeout,
    };
    let deadline = tokio::time::Instant::now() + STARTUP_DB_WAIT;
    let mut delay = Duration::from_millis(200);
    loop {
        match try_connect_and_migrate(&settings).await {
            Ok(store) => return Ok(store),
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    retry_in_ms = delay.as_millis() as u64,
                    "database not ready"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.context("the database is unreachable (DATABASE_URL)")),
        }
    }
}

async fn try_connect_and_migrate(settings: &PoolSettings) -> anyhow::Result<Store> {
    let store = Store::connect(settings).await?;
    queue::setup(&store).await.context("applying the job queue's migrations")?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}
