//! TLS for outgoing HTTPS (the Proxmox API, remote write targets): system
//! roots, a CA file, a pinned certificate, or (only when
//! asked for explicitly) no verification at all.
//!
//! Proxmox clusters usually serve a self-signed certificate, so the common
//! secure setup is a pin of the certificate's SHA-256 fingerprint, the value
//! `pvenode cert info` and the web UI show.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// How the cluster's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Trust {
    /// Chain and host name checked against the system's root certificates.
    SystemRoots,
    /// Exactly the end-entity certificate with this SHA-256 is accepted.
    Pinned([u8; 32]),
    /// Chain and host name checked against the CA certificates in this PEM
    /// file (a private CA; the remote-write client's `tls.ca_file`).
    CaFile(std::path::PathBuf),
    /// Anything is accepted (`insecure_skip_verify`).
    Insecure,
}

/// Parses a fingerprint as users copy it: `AB:CD:...` from the Proxmox UI or
/// `pvenode cert info`, plain hex, or openssl's `sha256 Fingerprint=AB:CD:...`.
pub(crate) fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let mut t = text.trim();
    if let Some((label, rest)) = t.split_once('=')
        && label.to_ascii_lowercase().contains("fingerprint")
    {
        t = rest.trim();
    }
    let hex_digits: String = t
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect();
    let bytes = hex::decode(&hex_digits).map_err(|_| {
        format!("fingerprint {text:?} is not hex (expected 64 hex digits, colons optional)")
    })?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "fingerprint {text:?} has {} bytes; a SHA-256 fingerprint has 32 (64 hex digits)",
            bytes.len()
        )
    })
}

/// `AB:CD:...`, the way Proxmox displays fingerprints, so a mismatch message
/// can be compared by eye with `pvenode cert info`.
pub(crate) fn format_fingerprint(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// The pinned certificate was not the one served. Carried inside the rustls
/// error so the poller can report both fingerprints.
#[derive(Debug)]
pub(crate) struct FingerprintMismatch {
    pub expected: [u8; 32],
    pub got: [u8; 32],
}

impl std::fmt::Display for FingerprintMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "certificate fingerprint mismatch: expected {}, got {}",
            format_fingerprint(&self.expected),
            format_fingerprint(&self.got)
        )
    }
}

impl std::error::Error for FingerprintMismatch {}

/// Accepts one exact certificate (`pin`), or any (`None`,
/// `insecure_skip_verify`). Host name, issuer and dates are not checked: the
/// pin already names the only certificate that can pass, and self-signed
/// Proxmox certificates often do not match the address used. The handshake
/// signature is still verified, so the server must hold the certificate's
/// private key.
#[derive(Debug)]
struct PinnedVerifier {
    pin: Option<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(FingerprintMismatch { expected: pin, got })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Builds the rustls client configuration for `trust`, always on the ring
/// provider (reqwest is built without one of its own).
pub(crate) fn client_config(trust: &Trust) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let config = match trust {
        Trust::SystemRoots => builder
            .with_root_certificates(system_roots())
            .with_no_client_auth(),
        Trust::CaFile(path) => builder
            .with_root_certificates(ca_file_roots(path)?)
            .with_no_client_auth(),
        Trust::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pin: Some(*pin),
                algorithms,
            }))
            .with_no_client_auth(),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pin: None,
                algorithms,
            }))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// The certificates of a PEM file, as trust roots; an error names the file.
pub(crate) fn ca_file_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read the CA file {shown}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the CA file {shown} is not valid PEM: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("the CA file {shown} holds no usable certificate"));
    }
    Ok(roots)
}

fn system_roots() -> rustls::RootCertStore {
    let loaded = rustls_native_certs::load_native_certs();
    for e in &loaded.errors {
        tracing::debug!("proxmox: skipping a system root certificate: {e}");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        // Not fatal: pinned instances do not need roots, and the poll error
        // will say the certificate is not trusted.
        tracing::warn!(
            "proxmox: no system root certificates found; clusters without a `fingerprint` cannot be verified"
        );
    }
    roots
}

/// Finds the rustls error behind a reqwest error, if the failure was TLS.
///
/// `std::io::Error::source` skips the error it wraps, so each io::Error in
/// the chain is opened with `get_ref` as well.
pub(crate) fn find_tls_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = find_tls_error(inner)
        {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

/// A readable message for a TLS failure; fingerprint mismatches name both
/// fingerprints.
pub(crate) fn describe_tls_error(e: &rustls::Error, trust: &Trust) -> String {
    if let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) = e
        && let Some(m) = inner.downcast_ref::<FingerprintMismatch>()
    {
        return m.to_string();
    }
    match (e, trust) {
        (rustls::Error::InvalidCertificate(reason), Trust::SystemRoots) => format!(
            "TLS certificate not trusted ({reason:?}); for a self-signed cluster set `fingerprint` to its SHA-256 fingerprint"
        ),
        (rustls::Error::InvalidCertificate(reason), _) => {
            format!("TLS certificate rejected ({reason:?})")
        }
        _ => format!("TLS handshake failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_every_common_spelling() {
        let hex = "ab".repeat(32);
        let want = [0xab; 32];
        assert_eq!(parse_fingerprint(&hex).unwrap(), want);
        assert_eq!(parse_fingerprint(&hex.to_uppercase()).unwrap(), want);
        let colons = format_fingerprint(&want);
        assert_eq!(colons.len(), 32 * 3 - 1);
        assert_eq!(parse_fingerprint(&colons).unwrap(), want);
        assert_eq!(
            parse_fingerprint(&format!("sha256 Fingerprint={colons}")).unwrap(),
            want
        );
        assert_eq!(
            parse_fingerprint(&format!("  {}  ", colons.to_lowercase())).unwrap(),
            want
        );
        assert!(parse_fingerprint("zz").unwrap_err().contains("not hex"));
        assert!(parse_fingerprint("abcd").unwrap_err().contains("2 bytes"));
        assert!(
            parse_fingerprint(&"ab".repeat(20))
                .unwrap_err()
                .contains("20 bytes")
        );
    }

    #[test]
    fn mismatch_message_names_both_fingerprints() {
        let e = rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            FingerprintMismatch {
                expected: [1; 32],
                got: [2; 32],
            },
        ))));
        let msg = describe_tls_error(&e, &Trust::Pinned([1; 32]));
        assert!(
            msg.starts_with("certificate fingerprint mismatch: expected 01:01:"),
            "{msg}"
        );
        assert!(msg.contains(", got 02:02:"), "{msg}");
    }

    #[test]
    fn every_trust_mode_builds() {
        for trust in [Trust::SystemRoots, Trust::Pinned([0; 32]), Trust::Insecure] {
            client_config(&trust).unwrap();
        }
    }
}
