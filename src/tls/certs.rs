//! Reading certificates: a PEM chain and its private key (RSA, ECDSA or
//! Ed25519), checked to match, with the names the certificate serves (its
//! subject alternative names) and when it expires. Every mistake names its
//! file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use xxhash_rust::xxh3::xxh3_64;

use crate::config::CertFiles;

/// A certificate ready to serve.
#[derive(Debug, Clone)]
pub struct Cert {
    pub files: CertFiles,
    /// DNS names from the subject alternative names, lowercase; wildcards
    /// as `*.example.com`.
    pub names: Vec<String>,
    pub not_after: SystemTime,
    pub loaded_at: SystemTime,
    pub key: Arc<CertifiedKey>,
    /// A hash of both files' bytes: a reload that finds the same bytes
    /// keeps the certificate it has.
    pub fingerprint: u64,
}

impl Cert {
    /// A short label: the first name, or the file.
    pub fn label(&self) -> String {
        self.names
            .first()
            .cloned()
            .unwrap_or_else(|| self.files.cert.display().to_string())
    }

    /// Whether it expires within `within` of `now` (or has expired).
    pub fn expires_within(&self, within: Duration, now: SystemTime) -> bool {
        self.not_after <= now + within
    }
}

/// Why a certificate could not be loaded; always names a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("{}: cannot read it: {why}", .path.display())]
    Unreadable { path: PathBuf, why: String },
    #[error("{}: no PEM certificate in it; give the certificate chain, from `-----BEGIN CERTIFICATE-----`", .path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: not a certificate Switchyard can read: {why}", .path.display())]
    BadCertificate { path: PathBuf, why: String },
    #[error("{}: no PEM private key in it (PKCS#8, RSA or EC); give the key of the certificate", .path.display())]
    NoKey { path: PathBuf },
    #[error("{}: a key of a kind rustls cannot sign with: {why}; use RSA, ECDSA (P-256, P-384) or Ed25519", .path.display())]
    BadKey { path: PathBuf, why: String },
    #[error("{}: this key does not belong to the certificate {}; give the key it was issued for", .key.display(), .cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: the certificate names no DNS host in its subject alternative names, so no client could be given it", .path.display())]
    NoNames { path: PathBuf },
    #[error("{} and {} both serve `{name}`: which one a client gets would be a guess; remove the name from one", .first.display(), .second.display())]
    Ambiguous {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// Reads one certificate and its key.
pub fn load(files: &CertFiles) -> Result<Cert, CertError> {
    let cert_path = &files.cert;
    let (chain, cert_pem) = read_certs(cert_path)?;
    let (names, not_after) =
        names_and_expiry(&chain[0]).map_err(|why| CertError::BadCertificate {
            path: cert_path.clone(),
            why,
        })?;
    if names.is_empty() {
        return Err(CertError::NoNames {
            path: cert_path.clone(),
        });
    }
    let (certified, key_pem, _) = certified_key(files, chain)?;
    let mut both = cert_pem;
    both.extend_from_slice(&key_pem);
    Ok(Cert {
        files: files.clone(),
        names,
        not_after,
        loaded_at: SystemTime::now(),
        key: Arc::new(certified),
        fingerprint: xxh3_64(&both),
    })
}

/// Reads every certificate, and refuses two that serve the same name.
pub fn load_all(files: &[CertFiles]) -> Result<Vec<Cert>, CertError> {
    let certs: Vec<Cert> = files.iter().map(load).collect::<Result<_, _>>()?;
    for (i, a) in certs.iter().enumerate() {
        for b in &certs[i + 1..] {
            if let Some(name) = a.names.iter().find(|n| b.names.contains(n)) {
                return Err(CertError::Ambiguous {
                    name: name.clone(),
                    first: a.files.cert.clone(),
                    second: b.files.cert.clone(),
                });
            }
        }
    }
    Ok(certs)
}

/// Reads the PEM certificates of `path`, each checked to parse: at least
/// one. Also gives the file's bytes.
pub fn read_certs(path: &Path) -> Result<(Vec<CertificateDer<'static>>, Vec<u8>), CertError> {
    let pem = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::BadCertificate {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    for der in &certs {
        let bad = |why: String| CertError::BadCertificate {
            path: path.to_path_buf(),
            why,
        };
        x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| bad(e.to_string()))?;
        x509_parser_pingora::parse_x509_certificate(der.as_ref())
            .map_err(|e| bad(e.to_string()))?;
    }
    Ok((certs, pem))
}

/// A client certificate and its key, checked to match: the chain, leaf
/// first, and the key, both DER.
pub fn read_identity(files: &CertFiles) -> Result<(Vec<Vec<u8>>, Vec<u8>), CertError> {
    let (chain, _) = read_certs(&files.cert)?;
    let ders = chain.iter().map(|c| c.as_ref().to_vec()).collect();
    let (_, _, key) = certified_key(files, chain)?;
    Ok((ders, key))
}

/// `chain` with the key of `files`, checked to belong to its leaf. Also
/// gives the key file's bytes and the key, DER.
fn certified_key(
    files: &CertFiles,
    chain: Vec<CertificateDer<'static>>,
) -> Result<(CertifiedKey, Vec<u8>, Vec<u8>), CertError> {
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| CertError::NoKey {
        path: files.key.clone(),
    })?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| CertError::BadKey {
            path: files.key.clone(),
            why: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| CertError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
    })?;
    let der = key.secret_der().to_vec();
    Ok((certified, key_pem, der))
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|e| CertError::Unreadable {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

/// The DNS names of a certificate's subject alternative names, and its
/// expiry.
fn names_and_expiry(der: &CertificateDer<'_>) -> Result<(Vec<String>, SystemTime), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                let n = dns.trim_end_matches('.').to_ascii_lowercase();
                if !n.is_empty() && !names.contains(&n) {
                    names.push(n);
                }
            }
        }
    }
    let secs = cert.validity().not_after.timestamp();
    let not_after = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH
    };
    Ok((names, not_after))
}
