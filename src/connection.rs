//! Where and how to reach Temporal: the connection configuration (twin of the Python
//! dataclass `config.ConnectionConfig`), its TLS material, the per-process connection cache,
//! and the bound on one client call.
//!
//! One connection per [`ConnectionConfig`], opened lazily on first use and shared by every
//! call and thread of the process (upstream NOMAD opens a new one per call). tonic's channel
//! reconnects by itself when the server comes back after a restart. A failed connect is
//! classified here ([`ConnectKind`]) from the error's types, never from its text, so that
//! Python callers can branch on `TemporalConnectionError.kind`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use temporalio_client::{
    ClientTlsOptions, Connection, ConnectionOptions, GrpcCompression, RetryOptions, TlsOptions,
};
use tokio::sync::OnceCell;
use url::Url;

use crate::errors::{ConnectKind, EngineError};
use crate::runtime::generation;

/// TLS material for a connection; bytes, read from files by the Python side.
#[derive(FromPyObject, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsConfig {
    pub server_root_ca_cert: Option<Vec<u8>>,
    pub client_cert: Option<Vec<u8>>,
    pub client_private_key: Option<Vec<u8>>,
    pub domain: Option<String>,
}

/// Where and how to connect; twin of the Python dataclass `config.ConnectionConfig`.
/// Equal configurations share one connection.
#[derive(FromPyObject, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionConfig {
    pub host: String,
    pub port: u16,
    pub namespace: String,
    pub api_key: Option<String>,
    pub tls: Option<TlsConfig>,
    pub connect_timeout_millis: u64,
    pub identity: String,
    /// NOMAD API secret for payload encryption (None: payloads travel in plain JSON).
    pub payload_secret: Option<String>,
    /// Bound on one client call (not on waiting for a result), see [`bounded`].
    pub rpc_timeout_millis: u64,
    /// NOMAD 2.0's `temporal.payload_codec_key` (encrypts payloads, with its key id).
    pub payload_codec_key: Option<String>,
    /// The `encryption-key-id` written with payloads encrypted with `payload_codec_key`.
    pub payload_codec_key_id: String,
    /// gRPC body compression: `gzip`, `none`, or `auto` (see [`ConnectionConfig::compression`]).
    pub grpc_compression: String,
}

impl ConnectionConfig {
    /// A plain-text configuration for `host:port` (tests, benches).
    pub fn plain(host: &str, port: u16) -> Self {
        ConnectionConfig {
            host: host.to_string(),
            port,
            namespace: "default".to_string(),
            api_key: None,
            tls: None,
            connect_timeout_millis: 5000,
            identity: format!("{}@nomad-actions", std::process::id()),
            payload_secret: None,
            rpc_timeout_millis: 10_000,
            payload_codec_key: None,
            payload_codec_key_id: "default".to_string(),
            grpc_compression: "auto".to_string(),
        }
    }

    /// The compression this connection uses. `auto` (the default) compresses unless the
    /// host is a loopback address: on one machine gzip saves no bandwidth and costs CPU on
    /// both ends (it was the largest single item of the worker's Rust time, mostly zeroing
    /// a fresh compressor state for every small request). sdk-core falls back to no
    /// compression by itself when a server refuses gzip.
    pub fn compression(&self) -> Result<GrpcCompression, EngineError> {
        match self.grpc_compression.as_str() {
            "gzip" => Ok(GrpcCompression::Gzip),
            "none" => Ok(GrpcCompression::None),
            "auto" if is_loopback(&self.host) => Ok(GrpcCompression::None),
            "auto" => Ok(GrpcCompression::Gzip),
            other => Err(EngineError::Config(format!(
                "grpc_compression must be one of auto, gzip, none; got {other:?}"
            ))),
        }
    }

    /// The URL temporalio-client connects to; `https` whenever TLS or an API key is set.
    pub fn target(&self) -> String {
        let scheme = if self.tls.is_some() || self.api_key.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_millis.max(1))
    }

    fn options(&self) -> Result<ConnectionOptions, EngineError> {
        let url = Url::parse(&self.target()).map_err(|e| {
            EngineError::Config(format!("bad Temporal address {}: {e}", self.target()))
        })?;
        let tls = self.tls.as_ref().map(|t| {
            let client = match (&t.client_cert, &t.client_private_key) {
                (Some(cert), Some(key)) => Some(
                    ClientTlsOptions::builder()
                        .client_cert(cert.clone())
                        .client_private_key(key.clone())
                        .build(),
                ),
                _ => None,
            };
            TlsOptions::builder()
                .maybe_server_root_ca_cert(t.server_root_ca_cert.clone())
                .maybe_domain(t.domain.clone())
                .maybe_client_tls_options(client)
                .build()
        });
        // Retries of failed RPCs must end within the connect timeout, so that a server that
        // is down gives a clear error instead of a long silent wait.
        let retry = RetryOptions::builder()
            .max_elapsed_time(Some(self.connect_timeout()))
            .max_retries(3)
            .build();
        let identity = if self.identity.is_empty() {
            format!("{}@nomad-actions", std::process::id())
        } else {
            self.identity.clone()
        };
        Ok(ConnectionOptions::new(url)
            .identity(identity)
            .maybe_tls_options(tls)
            .maybe_api_key(self.api_key.clone())
            .maybe_metrics_meter(crate::telemetry::meter_for_connection())
            .connect_timeout(self.connect_timeout())
            .retry_options(retry)
            // A single host: DNS load balancing only adds a resolver task.
            .dns_load_balancing(None)
            .grpc_compression(self.compression()?)
            .build())
    }
}

/// Whether `host` names this machine: `localhost`, an IPv4 address in 127.0.0.0/8 or `::1`
/// (no DNS lookup: a name that resolves to loopback elsewhere keeps compression).
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

type ConnectionSlot = Arc<OnceCell<Connection>>;

/// The connection cache: a slot per configuration. A slot stays empty until a connect
/// succeeds, so a failed connect is retried on the next call. It lives in the process's
/// [`crate::runtime::Generation`]: a forked child starts with an empty one, because the
/// parent's connections run on tasks of a runtime the child does not have.
pub type ConnectionMap = HashMap<ConnectionConfig, ConnectionSlot>;

fn slot(config: &ConnectionConfig) -> ConnectionSlot {
    let mut map = generation()
        .connections
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    map.entry(config.clone()).or_default().clone()
}

/// The shared connection for `config`, connecting on first use.
pub async fn connection(config: &ConnectionConfig) -> Result<Connection, EngineError> {
    let slot = slot(config);
    let conn = slot
        .get_or_try_init(|| async {
            let target = config.target();
            let options = config.options()?;
            let attempt = async {
                // Resolve first, so an unknown host is told apart from a refused connection
                // by where it failed rather than by the resolver's message.
                if let Err(err) = tokio::net::lookup_host((config.host.as_str(), config.port)).await
                {
                    return Err(EngineError::connect(
                        &target,
                        ConnectKind::UnknownHost,
                        None,
                        format!("unknown host {:?}: {err}", config.host),
                    ));
                }
                Connection::connect(options).await.map_err(|err| {
                    EngineError::connect(&target, ConnectKind::of(&err), None, error_chain(&err))
                })
            };
            match tokio::time::timeout(config.connect_timeout(), attempt).await {
                Ok(result) => result,
                Err(_) => Err(EngineError::connect(
                    &target,
                    ConnectKind::TimedOut,
                    None,
                    format!("no answer within {} ms", config.connect_timeout_millis),
                )),
            }
        })
        .await?;
    Ok(conn.clone())
}

/// Number of configurations with a live connection (for tests of the cache).
pub fn open_connections() -> usize {
    let map = generation()
        .connections
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    map.values().filter(|slot| slot.initialized()).count()
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// `fut` (one client call: connect if needed, then the RPC) bounded by the configuration's
/// RPC timeout. Over a stalled connection (a partition, a proxy that stopped forwarding)
/// an RPC would wait forever; this turns that into the same error as a server that is
/// down, naming the address. The connection survives and serves the next call.
pub async fn bounded<T>(
    config: &ConnectionConfig,
    rpc: &'static str,
    fut: impl Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    let millis = config.rpc_timeout_millis.max(1);
    match tokio::time::timeout(Duration::from_millis(millis), fut).await {
        Ok(out) => out,
        Err(_) => Err(EngineError::connect(
            &config.target(),
            ConnectKind::TimedOut,
            Some(rpc),
            format!("{rpc}: no answer within {millis} ms"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_is_off_on_loopback_unless_asked_for() {
        let mut cfg = ConnectionConfig::plain("localhost", 7233);
        for (host, mode, expected) in [
            ("localhost", "auto", GrpcCompression::None),
            ("127.0.0.1", "auto", GrpcCompression::None),
            ("127.3.2.1", "auto", GrpcCompression::None),
            ("::1", "auto", GrpcCompression::None),
            ("[::1]", "auto", GrpcCompression::None),
            ("temporal.example.org", "auto", GrpcCompression::Gzip),
            ("10.0.0.5", "auto", GrpcCompression::Gzip),
            ("localhost", "gzip", GrpcCompression::Gzip),
            ("temporal.example.org", "none", GrpcCompression::None),
        ] {
            cfg.host = host.to_string();
            cfg.grpc_compression = mode.to_string();
            assert_eq!(cfg.compression().unwrap(), expected, "{host} {mode}");
        }
        cfg.grpc_compression = "zstd".to_string();
        let err = cfg.compression().unwrap_err().to_string();
        assert!(
            err.contains("grpc_compression") && err.contains("\"zstd\""),
            "{err}"
        );
    }

    #[test]
    fn target_uses_https_with_tls_or_api_key() {
        let mut cfg = ConnectionConfig::plain("localhost", 7233);
        assert_eq!(cfg.target(), "http://localhost:7233");
        cfg.api_key = Some("k".into());
        assert_eq!(cfg.target(), "https://localhost:7233");
        cfg.api_key = None;
        cfg.tls = Some(TlsConfig::default());
        assert_eq!(cfg.target(), "https://localhost:7233");
    }

    #[test]
    fn equal_configs_share_one_slot_and_different_ones_do_not() {
        let a = ConnectionConfig::plain("127.0.0.1", 1);
        let b = ConnectionConfig::plain("127.0.0.1", 1);
        let c = ConnectionConfig::plain("127.0.0.1", 2);
        assert!(Arc::ptr_eq(&slot(&a), &slot(&b)));
        assert!(!Arc::ptr_eq(&slot(&a), &slot(&c)));
    }

    #[test]
    fn an_unknown_host_is_classified_before_connecting() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut cfg = ConnectionConfig::plain("no-such-host.invalid", 7233);
        cfg.connect_timeout_millis = 5000;
        let err = rt.block_on(connection(&cfg)).unwrap_err();
        assert!(
            matches!(
                err,
                EngineError::Connect {
                    kind: ConnectKind::UnknownHost,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn failed_connect_is_a_clear_error_and_is_not_cached() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A port nobody listens on: bind one, then close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cfg = ConnectionConfig::plain("127.0.0.1", port);
        cfg.connect_timeout_millis = 2000;
        let started = std::time::Instant::now();
        let err = rt.block_on(connection(&cfg)).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        let text = err.to_string();
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(
            matches!(
                err,
                EngineError::Connect {
                    kind: ConnectKind::Refused,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            slot(&cfg).get().is_none(),
            "a failed connection must not be cached"
        );
    }
}
