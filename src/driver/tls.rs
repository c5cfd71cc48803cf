//! TLS for the drivers (rustls): a server configuration from PEM files,
//! reloadable like the key set, and optional client certificates (mTLS)
//! whose subject can stand for the principal.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::auth::ClientCertificate;
use crate::time::Timestamp;

/// Where the certificates are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; unset:
    /// no client certificates asked.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a certificate (with `client_ca`).
    pub require_client_cert: bool,
}

/// A TLS setup problem.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {problem}")]
pub struct TlsError {
    /// The file or step.
    pub what: String,
    /// What is wrong.
    pub problem: String,
}

fn err(what: impl Into<String>, problem: impl std::fmt::Display) -> TlsError {
    TlsError {
        what: what.into(),
        problem: problem.to_string(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds a server configuration from the files.
///
/// # Errors
/// A file that cannot be read or holds no usable certificate or key.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_name = files.cert.display().to_string();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| err(&cert_name, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(&cert_name, e))?;
    if chain.is_empty() {
        return Err(err(&cert_name, "no certificate"));
    }
    let key_name = files.key.display().to_string();
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| err(&key_name, e))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("tls", e))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let ca_name = ca.display().to_string();
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| err(&ca_name, e))? {
                roots
                    .add(cert.map_err(|e| err(&ca_name, e))?)
                    .map_err(|e| err(&ca_name, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if files.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| err(&ca_name, e))?)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| err(&key_name, e))?;
    Ok(Arc::new(config))
}

/// The server configuration in force, replaceable while serving: new
/// handshakes use the new certificate, open connections keep theirs.
#[derive(Debug, Clone)]
pub struct Tls {
    files: TlsFiles,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl Tls {
    /// Loads the files.
    ///
    /// # Errors
    /// As [`server_config`].
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = server_config(&files)?;
        Ok(Self {
            files,
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Re-reads the files; on failure the old configuration stays.
    ///
    /// # Errors
    /// As [`server_config`].
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        if let Ok(mut c) = self.current.write() {
            *c = config;
        }
        Ok(())
    }

    /// The files it reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// What a verified client certificate says, for authentication.
pub fn client_certificate(chain: Option<&[CertificateDer<'static>]>) -> Option<ClientCertificate> {
    let leaf = chain?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let dns_names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let not_after = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    Some(ClientCertificate {
        common_name,
        dns_names,
        not_after: Timestamp::from_secs(not_after),
    })
}
