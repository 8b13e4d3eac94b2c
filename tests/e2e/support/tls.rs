//! Certificates made by the tests (rcgen; no key is ever checked in),
//! written to a temp dir, the `[server.tls]` lines that serve them, and
//! HTTPS clients that trust the test CA.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

use super::DEADLINE;

/// The kind of a certificate's key.
#[derive(Debug, Clone, Copy)]
pub enum Key {
    P256,
    P384,
    Ed25519,
    Rsa,
}

impl Key {
    fn generate(self) -> KeyPair {
        match self {
            Key::P256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
            Key::P384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap(),
            Key::Ed25519 => KeyPair::generate_for(&PKCS_ED25519).unwrap(),
            Key::Rsa => {
                use rsa::pkcs8::EncodePrivateKey;
                let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
                let der = key.to_pkcs8_der().unwrap();
                let der = rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
                KeyPair::from_pkcs8_der_and_sign_algo(&der, &PKCS_RSA_SHA256).unwrap()
            }
        }
    }
}

/// A certificate authority the test's clients trust.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pub pem: String,
}

/// A certificate and its key, PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Switchyard test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (its subject alternative names), valid
    /// for a year.
    pub fn issue(&self, names: &[&str], key: Key) -> Leaf {
        self.issue_until(names, key, time::Duration::days(365))
    }

    /// A certificate for `names` that expires `valid` from now (negative:
    /// it has expired).
    pub fn issue_until(&self, names: &[&str], key: Key, valid: time::Duration) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(2);
        params.not_after = now + valid;
        let key = key.generate();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

impl Leaf {
    /// Writes `STEM.pem` and `STEM.key` in `dir`; returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&cert, &self.cert).unwrap();
        std::fs::write(&key, &self.key).unwrap();
        (cert, key)
    }
}

/// `[server.tls]` on `listen` with these (cert, key) files, and `extra`
/// lines (ending in `\n`) for the table. Goes last in `[server]` lines.
pub fn section(listen: SocketAddr, certs: &[(PathBuf, PathBuf)], extra: &str) -> String {
    let list: Vec<String> = certs
        .iter()
        .map(|(c, k)| {
            format!(
                "{{ cert = {:?}, key = {:?} }}",
                c.display().to_string(),
                k.display().to_string()
            )
        })
        .collect();
    format!(
        "[server.tls]\nlisten = [\"{listen}\"]\ncertificates = [{}]\n{extra}",
        list.join(", ")
    )
}

/// A client that trusts `ca` and reaches each name at its address.
pub fn client(ca: &Ca, resolve: &[(&str, SocketAddr)]) -> reqwest::ClientBuilder {
    let root = reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(DEADLINE)
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .tls_info(true);
    for (name, addr) in resolve {
        builder = builder.resolve(name, *addr);
    }
    builder
}

/// The DNS names of the certificate the server presented for `resp`.
pub fn peer_names(resp: &reqwest::Response) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let info = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("the client keeps TLS info");
    let der = info
        .peer_certificate()
        .expect("the server sent a certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().expect("a SAN");
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}
