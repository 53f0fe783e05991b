//! Native HTTPS (`TLS_CERT_PATH`, `TLS_KEY_PATH`): the certificate chain and key are read from
//! PEM files at start-up and served with rustls on the `ring` provider, the one reqwest and
//! sqlx already use (poem's own `rustls` listener would add a second provider, aws-lc-rs).
//!
//! [`TlsAcceptor`] wraps the TCP acceptor: it hands poem each connection at once and runs the
//! TLS handshake on that connection's own task, so one slow or silent client never holds up
//! the accept loop, and a handshake that does not finish within [`HANDSHAKE_TIMEOUT`] closes
//! the connection. Plain HTTP on an HTTPS port fails the handshake and is never served.

use std::{
    fmt, fs, io,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use poem::{
    http::uri::Scheme,
    listener::{Acceptor, TcpAcceptor},
    web::{LocalAddr, RemoteAddr},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{
    rustls::{
        ServerConfig,
        crypto::ring,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
    server::TlsStream,
};

use crate::config::ConfigError;

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A validated server certificate and key, ready to serve.
#[derive(Clone)]
pub struct TlsConfig(Arc<ServerConfig>);

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConfig(..)")
    }
}

impl TlsConfig {
    /// Reads and checks the PEM files: the certificate chain (leaf first) and its private key
    /// (PKCS#8, PKCS#1 or SEC1). Every failure names the variable whose file is at fault.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, ConfigError> {
        let cert_err = |reason: String| ConfigError { name: "TLS_CERT_PATH", reason };
        let key_err = |reason: String| ConfigError { name: "TLS_KEY_PATH", reason };

        let cert_pem =
            fs::read(cert_path).map_err(|e| cert_err(format!("cannot read {}: {e}", cert_path.display())))?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_err(format!("{} is not valid PEM: {e}", cert_path.display())))?;
        if chain.is_empty() {
            return Err(cert_err(format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                cert_path.display()
            )));
        }

        let key_pem =
            fs::read(key_path).map_err(|e| key_err(format!("cannot read {}: {e}", key_path.display())))?;
        // The error names no key material: only which kind of PEM section was missing.
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            key_err(format!(
                "{} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                key_path.display()
            ))
        })?;

        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| cert_err(format!("no TLS protocol version is available: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| {
                key_err(format!(
                    "the key in {} cannot serve the certificate in TLS_CERT_PATH ({}): {e}",
                    key_path.display(),
                    cert_path.display()
                ))
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self(Arc::new(config)))
    }

    /// `inner`'s connections, served over TLS.
    pub fn acceptor(&self, inner: TcpAcceptor) -> TlsAcceptor {
        TlsAcceptor { inner, tls: tokio_rustls::TlsAcceptor::from(self.0.clone()) }
    }
}

/// A poem acceptor serving HTTPS on a TCP listener.
pub struct TlsAcceptor {
    inner: TcpAcceptor,
    tls: tokio_rustls::TlsAcceptor,
}

impl Acceptor for TlsAcceptor {
    type Io = TlsConnection;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (stream, local, remote, _) = self.inner.accept().await?;
        let handshake = Box::pin(tokio::time::timeout(HANDSHAKE_TIMEOUT, self.tls.accept(stream)));
        Ok((TlsConnection::Handshaking(handshake), local, remote, Scheme::HTTPS))
    }
}

type Handshake = Pin<Box<tokio::time::Timeout<tokio_rustls::Accept<TcpStream>>>>;

/// One connection: its handshake runs on the first read or write.
pub enum TlsConnection {
    Handshaking(Handshake),
    Ready(Box<TlsStream<TcpStream>>),
    Failed,
}

impl TlsConnection {
    /// Drives the handshake; `Ready(Ok)` once the connection is usable.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut TlsStream<TcpStream>>> {
        if let Self::Handshaking(handshake) = self {
            let outcome = ready!(handshake.as_mut().poll(cx));
            match outcome {
                Ok(Ok(stream)) => *self = Self::Ready(Box::new(stream)),
                Ok(Err(e)) => {
                    // Scanners and plain-HTTP clients end here; not worth more than debug.
                    tracing::debug!(error = %e, "TLS handshake failed");
                    *self = Self::Failed;
                    return Poll::Ready(Err(e));
                }
                Err(_elapsed) => {
                    tracing::debug!("TLS handshake timed out");
                    *self = Self::Failed;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    )));
                }
            }
        }
        match self {
            Self::Ready(stream) => Poll::Ready(Ok(stream)),
            _ => Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, "the TLS handshake failed"))),
        }
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_handshake(cx))?;
        Pin::new(stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_handshake(cx))?;
        Pin::new(stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_handshake(cx))?;
        Pin::new(stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        matches!(self, Self::Ready(stream) if stream.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_handshake(cx))?;
        Pin::new(stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Ready(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            // Nothing was established, so there is nothing to close politely.
            _ => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls").join(name)
    }

    fn temp_file(contents: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("cognie-tls-{}.pem", uuid::Uuid::new_v4().simple()));
        fs::write(&path, contents).expect("write temp file");
        path
    }

    #[test]
    fn the_test_certificate_and_key_load() {
        TlsConfig::load(&fixture("localhost.crt"), &fixture("localhost.key")).expect("fixture loads");
    }

    #[test]
    fn each_failure_names_the_variable_at_fault() {
        let (cert, key) = (fixture("localhost.crt"), fixture("localhost.key"));
        let missing = Path::new("/nonexistent/cognie.pem");

        let e = TlsConfig::load(missing, &key).unwrap_err();
        assert_eq!(e.name, "TLS_CERT_PATH");
        assert!(e.reason.contains("cannot read /nonexistent/cognie.pem"), "{e}");
        let e = TlsConfig::load(&cert, missing).unwrap_err();
        assert_eq!(e.name, "TLS_KEY_PATH");

        // A key where the certificate belongs: no certificate in it.
        let e = TlsConfig::load(&key, &key).unwrap_err();
        assert_eq!(e.name, "TLS_CERT_PATH");
        assert!(e.reason.contains("no PEM certificate"), "{e}");
        // A certificate where the key belongs.
        let e = TlsConfig::load(&cert, &cert).unwrap_err();
        assert_eq!(e.name, "TLS_KEY_PATH");
        assert!(e.reason.contains("no usable PEM private key"), "{e}");
        // Garbage inside a PEM section.
        let garbage = temp_file("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
        let e = TlsConfig::load(&garbage, &key).unwrap_err();
        assert_eq!(e.name, "TLS_CERT_PATH");
        let _ = fs::remove_file(garbage);
        // A valid key that does not belong to the certificate.
        let e = TlsConfig::load(&cert, &fixture("unrelated.key")).unwrap_err();
        assert_eq!(e.name, "TLS_KEY_PATH");
        assert!(e.reason.contains("cannot serve the certificate"), "{e}");
    }
}
