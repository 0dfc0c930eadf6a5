//! gRPC over TLS, optionally mutual, with certificates that can change
//! under a running server.
//!
//! tonic's own `ServerTlsConfig` is fixed at start-up, so the server does
//! the TLS itself: an accept loop hands every TCP connection to a
//! `tokio_rustls` handshake (each in its own task, so a slow client holds up
//! nobody) with whatever [`TlsReloader`] holds *at that moment*, and passes
//! the finished streams to tonic as its incoming connections. Reloading
//! (SIGHUP, or the files changing, checked every `AUDIT_TLS_RELOAD_SECS`)
//! swaps the `rustls::ServerConfig` atomically: connections already
//! established keep the session they negotiated, so in-flight calls and
//! streams carry on, and the next connection gets the new certificate. A
//! reload that fails (a half-written key, a certificate that does not match
//! it) is logged and the previous configuration stays.
//!
//! With a client CA configured, clients must present a certificate that
//! chains to it; the verified certificate's subject CN and DNS names travel
//! with every request of the connection as [`ConnInfo`] for the
//! [`crate::auth`] layer.

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// TLS options both services take; flatten into `ServeArgs`.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// Server certificate chain (PEM, leaf first). Serves TLS when set.
    #[arg(long, env = "AUDIT_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "AUDIT_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to:
    /// mutual TLS when set.
    #[arg(long, env = "AUDIT_TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// With a client CA: also accept clients without a certificate (they
    /// then need a bearer token).
    #[arg(long, env = "AUDIT_TLS_CLIENT_CERT_OPTIONAL", default_value_t = false)]
    pub tls_client_cert_optional: bool,
    /// How often the certificate files are checked for changes (SIGHUP
    /// reloads at once); 0 reloads on SIGHUP only.
    #[arg(long, env = "AUDIT_TLS_RELOAD_SECS", default_value_t = 30)]
    pub tls_reload_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: io::Error },
    #[error("{path}: no PEM {what} found")]
    Pem { path: PathBuf, what: &'static str },
    #[error("{path}: bad PEM: {error}")]
    BadPem {
        path: PathBuf,
        error: rustls_pki_types::pem::Error,
    },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

/// The current server TLS configuration, reloadable.
pub struct TlsReloader {
    args: TlsArgs,
    current: ArcSwap<ServerConfig>,
    /// The file contents the current configuration was built from.
    loaded_from: Mutex<Vec<u8>>,
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader")
            .field("cert", &self.args.tls_cert_file)
            .field("client_ca", &self.args.tls_client_ca_file)
            .finish_non_exhaustive()
    }
}

impl TlsReloader {
    /// `None` when `args` configure no TLS.
    pub fn load(args: &TlsArgs) -> Result<Option<Arc<Self>>, TlsError> {
        if args.tls_cert_file.is_none() {
            return Ok(None);
        }
        let files = read_files(args)?;
        let config = build(args, &files)?;
        tracing::info!(
            cert = ?args.tls_cert_file,
            mutual = args.tls_client_ca_file.is_some(),
            "serving TLS"
        );
        Ok(Some(Arc::new(Self {
            args: args.clone(),
            current: ArcSwap::from_pointee(config),
            loaded_from: Mutex::new(files.concat()),
        })))
    }

    /// Rebuilds the configuration when the files changed (or `force`).
    /// Returns whether a new configuration is in use; on error the old one stays.
    pub fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let files = read_files(&self.args)?;
        let joined = files.concat();
        let mut loaded = self.loaded_from.lock().unwrap_or_else(|p| p.into_inner());
        if !force && *loaded == joined {
            return Ok(false);
        }
        let config = build(&self.args, &files)?;
        self.current.store(Arc::new(config));
        *loaded = joined;
        Ok(true)
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Reloads on SIGHUP and every `tls_reload_secs`; runs until aborted.
    pub async fn watch(self: Arc<Self>) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; certificates reload on change only");
                None
            }
        };
        let period = Duration::from_secs(self.args.tls_reload_secs.max(1));
        let mut ticker = tokio::time::interval(period);
        ticker.tick().await;
        loop {
            let forced = tokio::select! {
                _ = async { match hangup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => true,
                _ = ticker.tick(), if self.args.tls_reload_secs > 0 => false,
            };
            match self.reload(forced) {
                Ok(true) => {
                    tracing::info!(cert = ?self.args.tls_cert_file, "TLS certificates reloaded")
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "TLS reload failed, keeping the previous certificates");
                }
            }
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

/// Cert, key and (possibly empty) client CA file contents.
fn read_files(args: &TlsArgs) -> Result<Vec<Vec<u8>>, TlsError> {
    let mut files = Vec::with_capacity(3);
    for path in [
        &args.tls_cert_file,
        &args.tls_key_file,
        &args.tls_client_ca_file,
    ] {
        files.push(match path {
            Some(path) => read_file(path)?,
            None => Vec::new(),
        });
    }
    Ok(files)
}

fn pem_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::BadPem {
            path: path.to_owned(),
            error,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn build(args: &TlsArgs, files: &[Vec<u8>]) -> Result<ServerConfig, TlsError> {
    let path = |p: &Option<PathBuf>| p.clone().unwrap_or_default();
    let cert_path = path(&args.tls_cert_file);
    let key_path = path(&args.tls_key_file);
    let certs = pem_certs(&cert_path, &files[0])?;
    let key = PrivateKeyDer::from_pem_slice(&files[1]).map_err(|error| match error {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Pem {
            path: key_path.clone(),
            what: "private key",
        },
        error => TlsError::BadPem {
            path: key_path.clone(),
            error,
        },
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &args.tls_client_ca_file {
        Some(ca_path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in pem_certs(ca_path, &files[2])? {
                roots.add(cert)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if args.tls_client_cert_optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build()?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    // gRPC is HTTP/2; grpc-go clients (grpcurl) insist on ALPN h2.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// What the [`crate::auth`] layer learns about a connection; tonic puts it
/// in the extensions of every request on it.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The verified client certificate's subject CN, then its DNS names
    /// (mutual TLS only).
    pub client_names: Option<Arc<[String]>>,
}

/// One accepted connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream, ConnInfo),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, ConnInfo),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        match self {
            Conn::Plain(_, info) | Conn::Tls(_, info) => info.clone(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s, _) => s.is_write_vectored(),
            Conn::Tls(s, _) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A TLS handshake that has not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connections accepted on `listener` (TLS when `tls` is set) as a
/// stream for `serve_with_incoming_shutdown`. The accept loop stops when
/// the stream is dropped (the server stopped accepting).
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<TlsReloader>>,
) -> ReceiverStream<io::Result<Conn>> {
    let (conns, stream) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = conns.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (socket, remote_addr) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // TCP_NODELAY: with Nagle on, a small response waits for the
            // client's delayed ACK (about 40 ms).
            let _ = socket.set_nodelay(true);
            let info = ConnInfo {
                remote_addr: Some(remote_addr),
                client_names: None,
            };
            match &tls {
                None => {
                    if conns.send(Ok(Conn::Plain(socket, info))).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let acceptor = tls.acceptor();
                    let conns = conns.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await
                        {
                            Ok(Ok(stream)) => {
                                let client_names = stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|certs| certs.first())
                                    .map(|leaf| certificate_names(leaf).into());
                                let info = ConnInfo {
                                    client_names,
                                    ..info
                                };
                                let _ = conns.send(Ok(Conn::Tls(Box::new(stream), info))).await;
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(%error, %remote_addr, "TLS handshake failed");
                            }
                            Err(_) => {
                                tracing::debug!(%remote_addr, "TLS handshake timed out");
                            }
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(stream)
}

/// Subject CN first, then DNS subject alternative names.
pub fn certificate_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_owned());
            }
        }
    }
    names
}
