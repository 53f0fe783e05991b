//! The one typed configuration, read once at start-up from the environment (plus `.env` and the
//! file named by `ENV_FILE`) and validated with messages that name the variable.
//!
//! Tests build a [`Config`] directly (see [`Config::from_lookup`]) instead of setting process
//! environment variables, so they can run in parallel.

use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use secrecy::{ExposeSecret, SecretString};

use crate::store::BackendKind;

/// Where the service keeps its state.
#[derive(Debug, Clone)]
pub enum DatabaseLocation {
    /// `DATABASE_URL` was set explicitly.
    Explicit(SecretString),
    /// No `DATABASE_URL`: the embedded default for one machine, a SQLite file in `DATA_DIR`.
    Default,
}

/// The embedded default's file name, in `DATA_DIR` (see [`DatabaseLocation::Default`]).
pub const DEFAULT_DATABASE_FILE: &str = "cognie-sync.db";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeneratorKind {
    Rules,
    OpenAi,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseLocation,
    /// Most connections one process opens to the database.
    pub database_max_connections: u32,
    /// How long a request waits for a database connection before it answers 503.
    pub database_acquire_timeout: Duration,
    pub bind_addr: SocketAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` are also served, alone (no API): how a
    /// `worker` process, which serves no API, is probed and scraped.
    pub ops_bind_addr: Option<SocketAddr>,
    /// Holds the generated API token and encryption key of the embedded default.
    pub data_dir: PathBuf,

    pub notion_webhook_secret: Option<SecretString>,
    pub notion_client_id: Option<String>,
    pub notion_client_secret: Option<SecretString>,
    pub notion_redirect_uri: Option<String>,
    /// How long an OAuth `state` issued by `GET /api/notion/auth` stays valid.
    pub oauth_state_ttl: Duration,
    pub notion_rate_limit_per_minute: u32,
    pub notion_max_retries: u32,
    pub notion_api_base_url: String,
    pub notion_version: String,
    /// Every Notion request's whole-request timeout (API calls and the OAuth token exchange).
    pub notion_timeout: Duration,

    pub debounce: Duration,
    pub debounce_max_wait: Duration,
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,

    pub api_token: Option<SecretString>,
    pub token_encryption_key: Option<SecretString>,
    /// The key being rotated out: stored secrets still under it are read and re-encrypted
    /// under `token_encryption_key` at start-up.
    pub token_encryption_key_previous: Option<SecretString>,

    pub flashcard_generator: GeneratorKind,
    pub openai_base_url: Option<String>,
    pub openai_api_key: Option<SecretString>,
    pub openai_model: Option<String>,

    pub log_format: LogFormat,
    pub log_file: Option<PathBuf>,

    pub reconcile_interval: Duration,
    pub retention: Duration,
    pub tls_cert_path: Option<PathBuf>,
    pub tls_key_path: Option<PathBuf>,

    /// Step jobs one worker process runs at once.
    pub worker_concurrency: usize,
    /// How often an idle worker polls for scheduled jobs (LISTEN/NOTIFY wakes it for new ones).
    pub worker_poll_interval: Duration,
    /// How long a step attempt's lease lasts without a heartbeat before another worker may take
    /// the step over.
    pub step_lease: Duration,
    /// How long a graceful shutdown waits for in-flight requests and steps.
    pub shutdown_timeout: Duration,
    /// Another workflow definition file instead of the built-in `workflows/notion_sync.toml`.
    pub workflow_file: Option<PathBuf>,
}

/// A setting that failed validation. The message always names the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {name}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub reason: String,
}

/// Why an env file could not be read, without the line that could not be parsed: dotenvy's
/// own message quotes it, value and all, and the value may be a secret (an unclosed quote in
/// `API_TOKEN="...`). Start-up errors go to stderr, which is often shipped to a log system.
fn env_file_error(e: dotenvy::Error) -> String {
    match e {
        dotenvy::Error::LineParse(line, at) => {
            // Named only if the line has an `=`: a line without one may be a pasted secret.
            let name = line.split_once('=').map(|(n, _)| n.trim().trim_start_matches("export ").trim());
            let name =
                name.filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            match name {
                Some(name) => format!(
                    "the line setting {name} cannot be parsed (at character {at}; the value is not shown: it may be a secret)"
                ),
                None => format!(
                    "a line cannot be parsed (at character {at}; it is not shown: it may hold a secret)"
                ),
            }
        }
        other => other.to_string(),
    }
}

impl Config {
    /// The OAuth client is configured but the redirect URI Notion requires is not: the service
    /// runs, with OAuth off (a warning at start-up says so).
    pub fn oauth_lacks_redirect_uri(&self) -> bool {
        self.notion_client_id.is_some()
            && self.notion_client_secret.is_some()
            && self.notion_redirect_uri.is_none()
    }

    /// Reads `ENV_FILE` (if set) and `.env` (if present) into the process environment without
    /// overriding what is already set, then reads the settings. Real environment variables win
    /// over `ENV_FILE`, which wins over `.env`.
    pub fn from_env() -> Result<Self, ConfigError> {
        // Empty counts as unset, as for every setting (`ENV_FILE=` from a compose file's
        // `${ENV_FILE:-}`).
        if let Some(path) = std::env::var("ENV_FILE").ok().filter(|p| !p.trim().is_empty()) {
            dotenvy::from_path(&path).map_err(|e| ConfigError {
                name: "ENV_FILE",
                reason: format!("cannot read {path}: {}", env_file_error(e)),
            })?;
        }
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => {
                return Err(ConfigError { name: ".env", reason: env_file_error(e) });
            }
        }
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any name → value lookup (the environment in production, a
    /// map in tests). Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env { lookup: &|name| lookup(name).filter(|v| !v.trim().is_empty()) };
        let config = Config {
            database: match env.string("DATABASE_URL") {
                Some(url) => {
                    if BackendKind::of_url(&url).is_none() {
                        return Err(ConfigError {
                            name: "DATABASE_URL",
                            reason: "must be a postgres:// (or postgresql://) or a sqlite:// URL".into(),
                        });
                    }
                    DatabaseLocation::Explicit(url.into())
                }
                None => DatabaseLocation::Default,
            },
            database_max_connections: env.parse_in("DATABASE_MAX_CONNECTIONS", 20, 1..=1000)?,
            database_acquire_timeout: Duration::from_millis(env.parse_in(
                "DATABASE_ACQUIRE_TIMEOUT_MS",
                2_000,
                10..=60_000,
            )?),
            bind_addr: env.parse("BIND_ADDR", SocketAddr::from(([0, 0, 0, 0], 8000)))?,
            ops_bind_addr: env.parse_opt("OPS_BIND_ADDR")?,
            data_dir: env.string("DATA_DIR").map(PathBuf::from).unwrap_or_else(|| "./data".into()),

            notion_webhook_secret: env.secret("NOTION_WEBHOOK_SECRET"),
            notion_client_id: env.string("NOTION_CLIENT_ID"),
            notion_client_secret: env.secret("NOTION_CLIENT_SECRET"),
            notion_redirect_uri: env.url_opt("NOTION_REDIRECT_URI")?,
            oauth_state_ttl: Duration::from_secs(env.parse_in("OAUTH_STATE_TTL_SECONDS", 600, 1..=86_400)?),
            notion_rate_limit_per_minute: env.parse_in("NOTION_RATE_LIMIT_PER_MINUTE", 3, 1..=100_000)?,
            notion_max_retries: env.parse_in("NOTION_MAX_RETRIES", 3, 0..=100)?,
            notion_api_base_url: env
                .url_opt("NOTION_API_BASE_URL")?
                .unwrap_or_else(|| "https://api.notion.com".into())
                .trim_end_matches('/')
                .to_owned(),
            notion_version: env.string("NOTION_VERSION").unwrap_or_else(|| "2025-09-03".into()),
            notion_timeout: Duration::from_secs(env.parse_in("NOTION_TIMEOUT_SECONDS", 30, 1..=600)?),

            debounce: Duration::from_secs_f64(env.parse_in("DEBOUNCE_SECONDS", 30.0, 0.0..=86_400.0)?),
            debounce_max_wait: Duration::from_secs_f64(env.parse_in(
                "DEBOUNCE_MAX_WAIT_SECONDS",
                300.0,
                0.0..=604_800.0,
            )?),
            retry_base_delay: Duration::from_millis(env.parse_in(
                "RETRY_BASE_DELAY_MS",
                1_000,
                1..=3_600_000,
            )?),
            retry_max_delay: Duration::from_millis(env.parse_in(
                "RETRY_MAX_DELAY_MS",
                300_000,
                1..=86_400_000,
            )?),

            api_token: env.secret("API_TOKEN"),
            token_encryption_key: env.secret("TOKEN_ENCRYPTION_KEY"),
            token_encryption_key_previous: env.secret("TOKEN_ENCRYPTION_KEY_PREVIOUS"),

            flashcard_generator: match env.string("FLASHCARD_GENERATOR").as_deref() {
                None | Some("rules") => GeneratorKind::Rules,
                Some("openai") => GeneratorKind::OpenAi,
                Some(other) => {
                    return Err(ConfigError {
                        name: "FLASHCARD_GENERATOR",
                        reason: format!("expected `rules` or `openai`, got `{other}`"),
                    });
                }
            },
            openai_base_url: env.url_opt("OPENAI_BASE_URL")?,
            openai_api_key: env.secret("OPENAI_API_KEY"),
            openai_model: env.string("OPENAI_MODEL"),

            log_format: match env.string("LOG_FORMAT").as_deref() {
                None | Some("pretty") => LogFormat::Pretty,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    return Err(ConfigError {
                        name: "LOG_FORMAT",
                        reason: format!("expected `pretty` or `json`, got `{other}`"),
                    });
                }
            },
            log_file: env.string("LOG_FILE").map(PathBuf::from),

            reconcile_interval: Duration::from_secs(env.parse_in(
                "RECONCILE_INTERVAL_SECONDS",
                900,
                1..=604_800,
            )?),
            // At least 2: Notion redelivers an event it got no 200 for over about a day, and a
            // redelivery must still find the event (to be answered `duplicate`, not run again).
            retention: Duration::from_secs(86_400 * env.parse_in("RETENTION_DAYS", 30u64, 2..=3650)?),
            tls_cert_path: env.string("TLS_CERT_PATH").map(PathBuf::from),
            tls_key_path: env.string("TLS_KEY_PATH").map(PathBuf::from),

            worker_concurrency: env.parse_in("WORKER_CONCURRENCY", 16, 1..=1024)?,
            worker_poll_interval: Duration::from_millis(env.parse_in(
                "WORKER_POLL_INTERVAL_MS",
                250,
                10..=60_000,
            )?),
            step_lease: Duration::from_secs(env.parse_in("STEP_LEASE_SECONDS", 10, 1..=3_600)?),
            shutdown_timeout: Duration::from_secs(env.parse_in("SHUTDOWN_TIMEOUT_SECONDS", 20, 0..=3_600)?),
            workflow_file: env.string("WORKFLOW_FILE").map(PathBuf::from),
        };
        config.validate()?;
        Ok(config)
    }

    /// Rules that involve more than one setting.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.retry_max_delay < self.retry_base_delay {
            return Err(ConfigError {
                name: "RETRY_MAX_DELAY_MS",
                reason: "must not be smaller than RETRY_BASE_DELAY_MS".into(),
            });
        }
        if self.debounce_max_wait < self.debounce {
            return Err(ConfigError {
                name: "DEBOUNCE_MAX_WAIT_SECONDS",
                reason: "must not be smaller than DEBOUNCE_SECONDS".into(),
            });
        }
        if self.tls_cert_path.is_some() != self.tls_key_path.is_some() {
            return Err(ConfigError {
                name: if self.tls_cert_path.is_some() { "TLS_KEY_PATH" } else { "TLS_CERT_PATH" },
                reason: "TLS_CERT_PATH and TLS_KEY_PATH must be set together".into(),
            });
        }
        if self.flashcard_generator == GeneratorKind::OpenAi {
            for (name, missing) in [
                ("OPENAI_BASE_URL", self.openai_base_url.is_none()),
                ("OPENAI_API_KEY", self.openai_api_key.is_none()),
                ("OPENAI_MODEL", self.openai_model.is_none()),
            ] {
                if missing {
                    return Err(ConfigError {
                        name,
                        reason: "required when FLASHCARD_GENERATOR=openai".into(),
                    });
                }
            }
        }
        // The client id and secret go together. The setup guide's env file sets both and no
        // redirect URI: that starts, with OAuth off until NOTION_REDIRECT_URI is set too
        // (Notion refuses an authorize URL without one; see `oauth_lacks_redirect_uri`).
        let oauth = [
            ("NOTION_CLIENT_ID", self.notion_client_id.is_some()),
            ("NOTION_CLIENT_SECRET", self.notion_client_secret.is_some()),
        ];
        let any_oauth = oauth.iter().any(|(_, set)| *set) || self.notion_redirect_uri.is_some();
        if any_oauth && let Some((name, _)) = oauth.iter().find(|(_, set)| !*set) {
            return Err(ConfigError {
                name,
                reason: "NOTION_CLIENT_ID and NOTION_CLIENT_SECRET are needed together (with \
                         NOTION_REDIRECT_URI) for OAuth \"Connect Notion\""
                    .into(),
            });
        }
        if self.database_backend() == BackendKind::Postgres && self.token_encryption_key.is_none() {
            return Err(ConfigError {
                name: "TOKEN_ENCRYPTION_KEY",
                reason: "required with PostgreSQL: every instance must share one key \
                         (generate one with `openssl rand -base64 32`)"
                    .into(),
            });
        }
        // Checked here, before start-up waits for the database, so a mistyped key is named at
        // once (also by `migrate`, which uses no key).
        for (name, key) in [
            ("TOKEN_ENCRYPTION_KEY", &self.token_encryption_key),
            ("TOKEN_ENCRYPTION_KEY_PREVIOUS", &self.token_encryption_key_previous),
        ] {
            if let Some(key) = key
                && crate::crypto::SecretCipher::from_base64_key(key).is_err()
            {
                return Err(ConfigError {
                    name,
                    reason:
                        "must be 32 bytes encoded as base64 (generate one with `openssl rand -base64 32`)"
                            .into(),
                });
            }
        }
        if let Some(previous) = &self.token_encryption_key_previous {
            use secrecy::ExposeSecret;
            let reason = match &self.token_encryption_key {
                None => Some("needs TOKEN_ENCRYPTION_KEY (the new key) to be set as well"),
                Some(key) if key.expose_secret().trim() == previous.expose_secret().trim() => {
                    Some("must differ from TOKEN_ENCRYPTION_KEY")
                }
                Some(_) => None,
            };
            if let Some(reason) = reason {
                return Err(ConfigError { name: "TOKEN_ENCRYPTION_KEY_PREVIOUS", reason: reason.into() });
            }
        }
        Ok(())
    }

    /// The database URL to connect to.
    pub fn database_url(&self) -> SecretString {
        match &self.database {
            DatabaseLocation::Explicit(url) => url.clone(),
            DatabaseLocation::Default => {
                format!("sqlite://{}", self.data_dir.join(DEFAULT_DATABASE_FILE).display()).into()
            }
        }
    }

    /// The database backend `DATABASE_URL` names (SQLite when it is unset).
    pub fn database_backend(&self) -> BackendKind {
        BackendKind::of_url(self.database_url().expose_secret()).unwrap_or(BackendKind::Sqlite)
    }
}

/// Typed access to the lookup, with errors that name the variable.
struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    fn string(&self, name: &str) -> Option<String> {
        (self.lookup)(name).map(|v| v.trim().to_owned())
    }

    fn secret(&self, name: &str) -> Option<SecretString> {
        self.string(name).map(SecretString::from)
    }

    fn parse<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        Ok(self.parse_opt(name)?.unwrap_or(default))
    }

    fn parse_opt<T>(&self, name: &'static str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.string(name) {
            None => Ok(None),
            Some(raw) => raw
                .parse()
                .map(Some)
                .map_err(|e: T::Err| ConfigError { name, reason: format!("cannot parse `{raw}`: {e}") }),
        }
    }

    fn parse_in<T>(
        &self,
        name: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
        T::Err: std::fmt::Display,
    {
        let value = self.parse(name, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError {
                name,
                reason: format!("{value} is outside {}..={}", range.start(), range.end()),
            })
        }
    }

    fn url_opt(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        match self.string(name) {
            None => Ok(None),
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => Ok(Some(url)),
            Some(url) => Err(ConfigError { name, reason: format!("`{url}` is not an http(s) URL") }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn an_env_file_line_that_cannot_be_parsed_is_named_but_not_shown() {
        let parse = |text: &str| {
            let error =
                dotenvy::from_read_iter(text.as_bytes()).find_map(Result::err).expect("a parse error");
            env_file_error(error)
        };
        let message = parse("BIND_ADDR=0.0.0.0:8000\nAPI_TOKEN=\"s3cret-token\n");
        assert!(message.contains("API_TOKEN") && !message.contains("s3cret"), "{message}");
        let message = parse("export API_TOKEN='s3cret-token\n");
        assert!(message.contains("API_TOKEN") && !message.contains("s3cret"), "{message}");
        let message = parse("s3cret-token with no name\n");
        assert!(!message.contains("s3cret"), "{message}");
        let message = parse("ntn_s3cret_pasted_alone\n");
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = config(&[]).expect("defaults are valid");
        assert_eq!(c.bind_addr.to_string(), "0.0.0.0:8000");
        assert_eq!(c.ops_bind_addr, None);
        assert_eq!(c.notion_rate_limit_per_minute, 3);
        assert_eq!(c.notion_max_retries, 3);
        assert_eq!(c.notion_version, "2025-09-03");
        assert_eq!(c.notion_api_base_url, "https://api.notion.com");
        assert_eq!(c.notion_timeout, Duration::from_secs(30));
        assert_eq!(c.debounce, Duration::from_secs(30));
        assert_eq!(c.debounce_max_wait, Duration::from_secs(300));
        assert_eq!(c.retry_base_delay, Duration::from_secs(1));
        assert_eq!(c.retry_max_delay, Duration::from_secs(300));
        assert_eq!(c.reconcile_interval, Duration::from_secs(900));
        assert_eq!(c.retention, Duration::from_secs(30 * 86_400));
        assert_eq!(c.flashcard_generator, GeneratorKind::Rules);
        assert_eq!(c.log_format, LogFormat::Pretty);
        assert!(matches!(c.database, DatabaseLocation::Default));
    }

    #[test]
    fn an_invalid_value_names_its_variable() {
        let err = config(&[("NOTION_RATE_LIMIT_PER_MINUTE", "many")]).unwrap_err();
        assert_eq!(err.name, "NOTION_RATE_LIMIT_PER_MINUTE");
        let err = config(&[("NOTION_RATE_LIMIT_PER_MINUTE", "0")]).unwrap_err();
        assert_eq!(err.name, "NOTION_RATE_LIMIT_PER_MINUTE");
        let err = config(&[("BIND_ADDR", "localhost")]).unwrap_err();
        assert_eq!(err.name, "BIND_ADDR");
        let err = config(&[("OPS_BIND_ADDR", "9100")]).unwrap_err();
        assert_eq!(err.name, "OPS_BIND_ADDR");
        let ops = config(&[("OPS_BIND_ADDR", "0.0.0.0:9100")]).expect("config").ops_bind_addr;
        assert_eq!(ops.map(|a| a.to_string()).as_deref(), Some("0.0.0.0:9100"));
        let err = config(&[("RETENTION_DAYS", "1")]).unwrap_err();
        assert_eq!(err.name, "RETENTION_DAYS", "shorter than Notion's redeliveries");
        let err = config(&[("LOG_FORMAT", "xml")]).unwrap_err();
        assert_eq!(err.name, "LOG_FORMAT");
        let err = config(&[("DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(err.name, "DATABASE_URL");
    }

    /// Valid keys (32 bytes, base64).
    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const OTHER_KEY: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

    #[test]
    fn postgres_needs_a_shared_encryption_key() {
        let err = config(&[("DATABASE_URL", "postgres://db/x")]).unwrap_err();
        assert_eq!(err.name, "TOKEN_ENCRYPTION_KEY");
        // The API token is not needed: without it, instances share one stored in the database.
        assert!(config(&[("DATABASE_URL", "postgres://db/x"), ("TOKEN_ENCRYPTION_KEY", KEY)]).is_ok());
        // SQLite is one machine's: the key is created in the data directory, like the default.
        let c = config(&[("DATABASE_URL", "sqlite:///var/lib/cognie/db.sqlite")]).unwrap();
        assert_eq!(c.database_backend(), BackendKind::Sqlite);
    }

    #[test]
    fn the_default_database_is_a_sqlite_file_in_the_data_directory() {
        let c = config(&[("DATA_DIR", "/srv/cognie")]).unwrap();
        assert_eq!(c.database_backend(), BackendKind::Sqlite);
        assert_eq!(c.database_url().expose_secret(), "sqlite:///srv/cognie/cognie-sync.db");
    }

    #[test]
    fn cross_setting_rules_are_checked() {
        let err = config(&[("RETRY_BASE_DELAY_MS", "5000"), ("RETRY_MAX_DELAY_MS", "100")]).unwrap_err();
        assert_eq!(err.name, "RETRY_MAX_DELAY_MS");
        let err = config(&[("FLASHCARD_GENERATOR", "openai")]).unwrap_err();
        assert_eq!(err.name, "OPENAI_BASE_URL");
        let err = config(&[("TLS_CERT_PATH", "/c.pem")]).unwrap_err();
        assert_eq!(err.name, "TLS_KEY_PATH");
        let err = config(&[("NOTION_CLIENT_ID", "id"), ("NOTION_REDIRECT_URI", "https://x/cb")]).unwrap_err();
        assert_eq!(err.name, "NOTION_CLIENT_SECRET");
        let err = config(&[("NOTION_REDIRECT_URI", "https://x/cb")]).unwrap_err();
        assert_eq!(err.name, "NOTION_CLIENT_ID");
        // The setup guide's `.env.production`: no redirect URI. It starts, with OAuth off.
        let guide = config(&[
            ("NOTION_CLIENT_ID", "your_notion_client_id"),
            ("NOTION_CLIENT_SECRET", "your_notion_client_secret"),
            ("NOTION_WEBHOOK_SECRET", "your_webhook_secret_key"),
            ("NOTION_RATE_LIMIT_PER_MINUTE", "3"),
            ("NOTION_MAX_RETRIES", "3"),
        ])
        .expect("the setup guide's settings start the service");
        assert!(guide.oauth_lacks_redirect_uri());
        let err = config(&[("TOKEN_ENCRYPTION_KEY_PREVIOUS", OTHER_KEY)]).unwrap_err();
        assert_eq!(err.name, "TOKEN_ENCRYPTION_KEY_PREVIOUS");
        let err =
            config(&[("TOKEN_ENCRYPTION_KEY", KEY), ("TOKEN_ENCRYPTION_KEY_PREVIOUS", KEY)]).unwrap_err();
        assert_eq!(err.name, "TOKEN_ENCRYPTION_KEY_PREVIOUS");
        assert!(
            config(&[("TOKEN_ENCRYPTION_KEY", KEY), ("TOKEN_ENCRYPTION_KEY_PREVIOUS", OTHER_KEY)]).is_ok()
        );
    }

    #[test]
    fn an_encryption_key_that_is_not_32_bytes_of_base64_is_refused_at_once() {
        for (name, value) in [
            ("TOKEN_ENCRYPTION_KEY", "changeme"),
            // 31 bytes.
            ("TOKEN_ENCRYPTION_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZQ=="),
            ("TOKEN_ENCRYPTION_KEY_PREVIOUS", "changeme"),
        ] {
            let vars = if name == "TOKEN_ENCRYPTION_KEY" {
                vec![(name, value)]
            } else {
                vec![("TOKEN_ENCRYPTION_KEY", KEY), (name, value)]
            };
            let err = config(&vars).unwrap_err();
            assert_eq!(err.name, name, "{value}");
            assert!(err.reason.contains("32 bytes encoded as base64"), "{}", err.reason);
        }
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let c = config(&[("NOTION_WEBHOOK_SECRET", "secret_abc123"), ("API_TOKEN", "tok_987")]).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret_abc123") && !shown.contains("tok_987"), "{shown}");
    }
}
