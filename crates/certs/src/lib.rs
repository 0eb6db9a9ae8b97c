//! Per-cluster certificate authorities, as Magnum keeps them: a self-signed CA per cluster
//! and purpose, client certificates signed from tenants' CSRs with the subject copied as
//! upstream does, and private keys sealed with an authenticated cipher before they are
//! stored. Pure computation: no files, no database.

use std::fmt::Write as _;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    SubjectPublicKeyInfo,
};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, ParsedExtension, X509CertificationRequest};

/// A CA's certificate and private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CaMaterial {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never reach logs.
        f.debug_struct("CaMaterial")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The CSR cannot be read or its signature does not verify.
    #[error("Received invalid csr: {0}")]
    InvalidCsr(String),
    /// A critical extension outside the allowed ones.
    #[error("Extension '{0}' not allowed")]
    ExtensionNotAllowed(String),
    #[error("certificate generation failed: {0}")]
    Generation(String),
    #[error("the stored CA cannot be read: {0}")]
    BadCa(String),
}

fn generation(error: rcgen::Error) -> CertError {
    CertError::Generation(error.to_string())
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // A failing system RNG leaves zeros; the serial is then still valid, only not random.
    let _ = SystemRandom::new().fill(&mut bytes);
    bytes[0] &= 0x7F;
    SerialNumber::from_slice(&bytes)
}

/// A new self-signed CA whose subject CN is `common_name` (upstream: the cluster's name, or
/// its uuid): basicConstraints CA:TRUE pathlen 0 and keyUsage keyCertSign, both critical
/// (rcgen marks them so). ECDSA P-256, which kubectl, Docker and OpenSSL accept.
pub fn generate_ca(common_name: &str, validity_days: i64) -> Result<CaMaterial, CertError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generation)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(random_serial());
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(validity_days);
    let certificate = params.self_signed(&key).map_err(generation)?;
    Ok(CaMaterial {
        cert_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The DER of a PEM certificate.
fn certificate_der(cert_pem: &str) -> Result<Vec<u8>, CertError> {
    pem_body(cert_pem, "CERTIFICATE").map_err(|error| CertError::BadCa(error.to_string()))
}

/// A signing key pair without a certificate, as PEM (public key, private key): what a
/// Kubernetes control plane signs service-account tokens with. ECDSA P-256 (ES256).
pub fn generate_signing_key() -> Result<(String, String), CertError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generation)?;
    Ok((key.public_key_pem(), key.serialize_pem()))
}

/// The SHA-256 fingerprint of a certificate (of its DER), in lower-case hex: a name for
/// things that belong to this one certificate, such as its key's file.
pub fn certificate_fingerprint(cert_pem: &str) -> Result<String, CertError> {
    let digest = ring::digest::digest(&ring::digest::SHA256, &certificate_der(cert_pem)?);
    let mut hex = String::with_capacity(64);
    for byte in digest.as_ref() {
        let _ = write!(hex, "{byte:02x}");
    }
    Ok(hex)
}

/// Whether `key_pem` is the private key of the certificate `cert_pem`'s public key.
pub fn key_matches_certificate(cert_pem: &str, key_pem: &str) -> Result<bool, CertError> {
    let der = certificate_der(cert_pem)?;
    let (_, certificate) = x509_parser::prelude::X509Certificate::from_der(&der)
        .map_err(|error| CertError::BadCa(error.to_string()))?;
    let key = KeyPair::from_pem(key_pem).map_err(|error| CertError::BadCa(error.to_string()))?;
    Ok(certificate.public_key().subject_public_key.data.as_ref() == key.public_key_raw())
}

/// The CA ready to sign: its parameters re-read from the stored certificate.
fn issuer(ca: &CaMaterial) -> Result<(rcgen::Certificate, KeyPair), CertError> {
    let key =
        KeyPair::from_pem(&ca.key_pem).map_err(|error| CertError::BadCa(error.to_string()))?;
    let params = CertificateParams::from_ca_cert_pem(&ca.cert_pem)
        .map_err(|error| CertError::BadCa(error.to_string()))?;
    // Re-signing the same subject and key gives the same issuer name and key identifier, so
    // what it signs chains to the stored certificate.
    let certificate = params.self_signed(&key).map_err(generation)?;
    Ok((certificate, key))
}

const ALLOWED_EXTENSIONS: [(&str, &str); 5] = [
    ("2.5.29.15", "keyUsage"),
    ("2.5.29.37", "extendedKeyUsage"),
    ("2.5.29.17", "subjectAltName"),
    ("2.5.29.19", "basicConstraints"),
    ("2.5.29.14", "subjectKeyIdentifier"),
];

fn pem_body(pem: &str, label: &str) -> Result<Vec<u8>, CertError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem
        .find(&begin)
        .ok_or_else(|| CertError::InvalidCsr(format!("no {begin} line")))?
        + begin.len();
    let stop = pem[start..]
        .find(&end)
        .ok_or_else(|| CertError::InvalidCsr(format!("no {end} line")))?
        + start;
    decode_base64(&pem[start..stop]).ok_or_else(|| CertError::InvalidCsr("bad base64".to_owned()))
}

/// Standard base64 with padding (the body of PEM, kubeconfig `*-data` fields).
pub fn base64_encode(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * index)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\r' | b'\n' | b' ' | b'\t' => continue,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

/// Signs a tenant's CSR with the cluster's CA, as upstream does: the subject copied from the
/// CSR (so `O=system:masters` means cluster-admin), issuer = the CA, notBefore one day ago,
/// notAfter `validity_days` ahead, a random serial, SHA-256; keyUsage reduced to
/// digitalSignature/keyEncipherment/contentCommitment, extendedKeyUsage clientAuth (plus
/// serverAuth when asked), SANs kept, CA:TRUE never granted. The CSR's signature must verify.
pub fn sign_csr(ca: &CaMaterial, csr_pem: &str, validity_days: i64) -> Result<String, CertError> {
    let der = pem_body(csr_pem, "CERTIFICATE REQUEST")
        .or_else(|_| pem_body(csr_pem, "NEW CERTIFICATE REQUEST"))?;
    sign_csr_der(ca, &der, validity_days)
}

/// [`sign_csr`] for a DER-encoded request.
pub fn sign_csr_der(ca: &CaMaterial, der: &[u8], validity_days: i64) -> Result<String, CertError> {
    let (_, csr) = X509CertificationRequest::from_der(der)
        .map_err(|error| CertError::InvalidCsr(error.to_string()))?;
    csr.verify_signature()
        .map_err(|_| CertError::InvalidCsr("the signature does not verify".to_owned()))?;
    let info = &csr.certification_request_info;
    let public_key = SubjectPublicKeyInfo::from_der(info.subject_pki.raw)
        .map_err(|error| CertError::InvalidCsr(format!("unsupported public key: {error}")))?;

    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    for attribute in info.subject.iter_attributes() {
        let oid: Vec<u64> = attribute
            .attr_type()
            .iter()
            .ok_or_else(|| CertError::InvalidCsr("subject attribute type".to_owned()))?
            .collect();
        let value = attribute
            .as_str()
            .map_err(|_| CertError::InvalidCsr("subject values must be text".to_owned()))?;
        subject.push(
            DnType::from_oid(&oid),
            DnValue::Utf8String(value.to_owned()),
        );
    }
    params.distinguished_name = subject;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::ContentCommitment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if let Some(extensions) = csr.requested_extensions() {
        for extension in extensions {
            match extension {
                ParsedExtension::SubjectAlternativeName(names) => {
                    for name in &names.general_names {
                        if let Some(san) = san_of(name) {
                            params.subject_alt_names.push(san);
                        }
                    }
                }
                ParsedExtension::ExtendedKeyUsage(usage) if usage.server_auth => {
                    params
                        .extended_key_usages
                        .push(ExtendedKeyUsagePurpose::ServerAuth);
                }
                _ => {}
            }
        }
    }
    // Critical extensions outside the allow-list are refused, as upstream.
    for attribute in csr.certification_request_info.iter_attributes() {
        if let x509_parser::prelude::ParsedCriAttribute::ExtensionRequest(request) =
            attribute.parsed_attribute()
        {
            for extension in &request.extensions {
                let oid = extension.oid.to_id_string();
                if extension.critical && !ALLOWED_EXTENSIONS.iter().any(|(id, _)| *id == oid) {
                    return Err(CertError::ExtensionNotAllowed(oid));
                }
            }
        }
    }
    params.serial_number = Some(random_serial());
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(validity_days);
    let (issuer, issuer_key) = issuer(ca)?;
    let certificate = params
        .signed_by(&public_key, &issuer, &issuer_key)
        .map_err(generation)?;
    Ok(certificate.pem().trim_end().to_owned())
}

/// The subject alternative names a client certificate may carry over from its CSR.
fn san_of(name: &x509_parser::extensions::GeneralName<'_>) -> Option<SanType> {
    use x509_parser::extensions::GeneralName;
    match name {
        GeneralName::DNSName(text) => Some(SanType::DnsName((*text).to_owned().try_into().ok()?)),
        GeneralName::RFC822Name(text) => {
            Some(SanType::Rfc822Name((*text).to_owned().try_into().ok()?))
        }
        GeneralName::URI(text) => Some(SanType::URI((*text).to_owned().try_into().ok()?)),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => Some(SanType::IpAddress(std::net::IpAddr::from(
                <[u8; 4]>::try_from(*bytes).ok()?,
            ))),
            16 => Some(SanType::IpAddress(std::net::IpAddr::from(
                <[u8; 16]>::try_from(*bytes).ok()?,
            ))),
            _ => None,
        },
        _ => None,
    }
}

/// A new client key and a CSR for it (what `coe cluster config` sends to be signed): the
/// subject `CN=<common_name>` plus `O=<organization>` when given.
pub fn client_key_and_csr(
    common_name: &str,
    organization: Option<&str>,
) -> Result<CaMaterial, CertError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generation)?;
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, common_name);
    if let Some(organization) = organization {
        subject.push(DnType::OrganizationName, organization);
    }
    params.distinguished_name = subject;
    let request = params.serialize_request(&key).map_err(generation)?;
    Ok(CaMaterial {
        cert_pem: request.pem().map_err(generation)?,
        key_pem: key.serialize_pem(),
    })
}

/// A certificate for a server of the cluster (a node's dockerd), with its names and
/// addresses; for drivers.
pub fn issue_server_certificate(
    ca: &CaMaterial,
    common_name: &str,
    names: &[String],
    validity_days: i64,
) -> Result<CaMaterial, CertError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generation)?;
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, common_name);
    params.distinguished_name = subject;
    for name in names {
        let san = match name.parse::<std::net::IpAddr>() {
            Ok(address) => SanType::IpAddress(address),
            Err(_) => SanType::DnsName(
                name.clone()
                    .try_into()
                    .map_err(|error: rcgen::Error| CertError::Generation(error.to_string()))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.serial_number = Some(random_serial());
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(validity_days);
    let (issuer, issuer_key) = issuer(ca)?;
    let certificate = params
        .signed_by(&key, &issuer, &issuer_key)
        .map_err(generation)?;
    Ok(CaMaterial {
        cert_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Seals private keys at rest with AES-256-GCM under a key the operator keeps in a file.
pub struct KeySealer {
    key: LessSafeKey,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the key must be 32 bytes (64 hexadecimal digits), found {0} bytes")]
    KeyLength(usize),
    #[error("the key file does not hold hexadecimal digits")]
    KeyEncoding,
    #[error("sealed data is damaged or was sealed with another key")]
    Tampered,
}

const SEALED_PREFIX: &str = "aes256gcm:";

impl KeySealer {
    /// From the text of a key file: 64 hexadecimal digits (surrounding whitespace ignored).
    pub fn from_key_text(text: &str) -> Result<Self, SealError> {
        let text = text.trim();
        if !text.len().is_multiple_of(2) || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(SealError::KeyEncoding);
        }
        let bytes: Vec<u8> = (0..text.len())
            .step_by(2)
            .map(|index| u8::from_str_radix(&text[index..index + 2], 16).unwrap_or_default())
            .collect();
        if bytes.len() != 32 {
            return Err(SealError::KeyLength(bytes.len()));
        }
        let key =
            UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| SealError::KeyLength(bytes.len()))?;
        Ok(Self {
            key: LessSafeKey::new(key),
        })
    }

    /// A new random key, as the text of a key file.
    pub fn generate_key_text() -> String {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system random number generator works");
        hex(&bytes)
    }

    /// `aes256gcm:<nonce hex>:<ciphertext+tag hex>`; `context` (e.g. the cluster uuid and
    /// purpose) is authenticated, so a sealed key cannot be moved to another record.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> String {
        let mut nonce_bytes = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce_bytes)
            .expect("the system random number generator works");
        let mut buffer = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(context.as_bytes()),
                &mut buffer,
            )
            .expect("AES-GCM sealing cannot fail for in-memory data");
        format!("{SEALED_PREFIX}{}:{}", hex(&nonce_bytes), hex(&buffer))
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SealError> {
        let rest = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(SealError::Tampered)?;
        let (nonce_hex, data_hex) = rest.split_once(':').ok_or(SealError::Tampered)?;
        let nonce: [u8; NONCE_LEN] = unhex(nonce_hex)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(SealError::Tampered)?;
        let mut data = unhex(data_hex).ok_or(SealError::Tampered)?;
        let plaintext = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .map_err(|_| SealError::Tampered)?;
        Ok(plaintext.to_vec())
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(text.get(index..index + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{parse_x509_certificate, X509Certificate};

    fn certificate(pem: &str) -> Vec<u8> {
        pem_body(pem, "CERTIFICATE").unwrap()
    }

    fn csr(subject: &[(DnType, &str)], critical_extra: bool) -> (String, KeyPair) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["node-1.example".to_owned()]).unwrap();
        let mut name = DistinguishedName::new();
        for (kind, value) in subject {
            name.push(kind.clone(), *value);
        }
        params.distinguished_name = name;
        if critical_extra {
            let mut extension = rcgen::CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![5, 0]);
            extension.set_criticality(true);
            params.custom_extensions.push(extension);
        }
        (params.serialize_request(&key).unwrap().pem().unwrap(), key)
    }

    fn with_parsed<T>(pem: &str, check: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
        let der = certificate(pem);
        let (_, parsed) = parse_x509_certificate(&der).unwrap();
        check(&parsed)
    }

    #[test]
    fn keys_are_told_apart_by_their_certificate() {
        let first = generate_ca("c1", 3650).unwrap();
        let second = generate_ca("c1", 3650).unwrap();
        assert!(key_matches_certificate(&first.cert_pem, &first.key_pem).unwrap());
        assert!(!key_matches_certificate(&first.cert_pem, &second.key_pem).unwrap());
        let fingerprint = certificate_fingerprint(&first.cert_pem).unwrap();
        assert_eq!(fingerprint.len(), 64);
        assert!(fingerprint
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(
            certificate_fingerprint(&first.cert_pem).unwrap(),
            fingerprint
        );
        assert_ne!(
            certificate_fingerprint(&second.cert_pem).unwrap(),
            fingerprint
        );
        assert!(certificate_fingerprint("not a certificate").is_err());
        assert!(key_matches_certificate(&first.cert_pem, "not a key").is_err());
    }

    #[test]
    fn a_ca_is_self_signed_and_constrained() {
        let ca = generate_ca("c1", 3650).unwrap();
        assert!(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            !format!("{ca:?}").contains("PRIVATE KEY"),
            "keys never print"
        );
        with_parsed(&ca.cert_pem, |parsed| {
            assert_eq!(parsed.subject().to_string(), "CN=c1");
            assert_eq!(parsed.issuer().to_string(), "CN=c1");
            let constraints = parsed.basic_constraints().unwrap().unwrap();
            assert!(constraints.critical);
            assert!(constraints.value.ca);
            assert_eq!(constraints.value.path_len_constraint, Some(0));
            assert!(parsed.key_usage().unwrap().unwrap().value.key_cert_sign());
            parsed.verify_signature(None).unwrap();
        });
    }

    #[test]
    fn signing_copies_the_subject_and_chains_to_the_ca() {
        let ca = generate_ca("c1", 3650).unwrap();
        let (request, _) = csr(
            &[
                (DnType::CommonName, "admin"),
                (DnType::OrganizationName, "system:masters"),
            ],
            false,
        );
        let signed = sign_csr(&ca, &request, 1825).unwrap();
        assert!(!signed.ends_with('\n'));
        let ca_der = certificate(&ca.cert_pem);
        let (_, ca_parsed) = parse_x509_certificate(&ca_der).unwrap();
        with_parsed(&signed, |parsed| {
            assert_eq!(parsed.subject().to_string(), "CN=admin, O=system:masters");
            assert_eq!(parsed.issuer().to_string(), "CN=c1");
            parsed
                .verify_signature(Some(ca_parsed.public_key()))
                .unwrap();
            let usage = parsed.extended_key_usage().unwrap().unwrap().value;
            assert!(usage.client_auth);
            assert!(!parsed
                .basic_constraints()
                .unwrap()
                .is_some_and(|bc| bc.value.ca));
            let days = (parsed.validity().not_after.timestamp()
                - parsed.validity().not_before.timestamp())
                / 86400;
            assert_eq!(days, 1826);
        });
        // Another CA's certificate does not verify it.
        let other = generate_ca("c1", 3650).unwrap();
        let other_der = certificate(&other.cert_pem);
        let (_, other_parsed) = parse_x509_certificate(&other_der).unwrap();
        with_parsed(&signed, |parsed| {
            assert!(parsed
                .verify_signature(Some(other_parsed.public_key()))
                .is_err());
        });
    }

    #[test]
    fn bad_csrs_are_refused_with_reasons() {
        let ca = generate_ca("c1", 10).unwrap();
        assert!(matches!(
            sign_csr(&ca, "garbage", 10),
            Err(CertError::InvalidCsr(_))
        ));
        let (request, _) = csr(&[(DnType::CommonName, "x")], false);
        // Flip a byte inside the signed body: the signature no longer verifies.
        let mut der = pem_body(&request, "CERTIFICATE REQUEST").unwrap();
        let middle = der.len() / 2;
        der[middle] ^= 0x01;
        let tampered = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64_encode(&der)
        );
        assert!(matches!(
            sign_csr(&ca, &tampered, 10),
            Err(CertError::InvalidCsr(_))
        ));
        let (critical, _) = csr(&[(DnType::CommonName, "x")], true);
        assert_eq!(
            sign_csr(&ca, &critical, 10).unwrap_err().to_string(),
            "Extension '1.2.3.4' not allowed"
        );
    }

    #[test]
    fn server_certificates_carry_their_addresses() {
        let ca = generate_ca("c1", 10).unwrap();
        let server = issue_server_certificate(
            &ca,
            "node-0",
            &["10.0.0.5".to_owned(), "node-0".to_owned()],
            10,
        )
        .unwrap();
        with_parsed(&server.cert_pem, |parsed| {
            let names = parsed
                .subject_alternative_name()
                .unwrap()
                .unwrap()
                .value
                .general_names
                .len();
            assert_eq!(names, 2);
        });
    }

    #[test]
    fn sealed_keys_open_only_with_their_key_and_context() {
        let sealer = KeySealer::from_key_text(&KeySealer::generate_key_text()).unwrap();
        let sealed = sealer.seal(b"-----BEGIN PRIVATE KEY-----", "cluster-1/ca");
        assert!(!sealed.contains("PRIVATE"));
        assert_eq!(
            sealer.open(&sealed, "cluster-1/ca").unwrap(),
            b"-----BEGIN PRIVATE KEY-----"
        );
        assert_eq!(
            sealer.open(&sealed, "cluster-2/ca"),
            Err(SealError::Tampered)
        );
        let other = KeySealer::from_key_text(&KeySealer::generate_key_text()).unwrap();
        assert_eq!(
            other.open(&sealed, "cluster-1/ca"),
            Err(SealError::Tampered)
        );
        let mut damaged = sealed.clone();
        let last = damaged.pop().unwrap();
        damaged.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            sealer.open(&damaged, "cluster-1/ca"),
            Err(SealError::Tampered)
        );
        assert_eq!(
            KeySealer::from_key_text("abcd").err(),
            Some(SealError::KeyLength(2))
        );
        assert_eq!(
            KeySealer::from_key_text("zz").err(),
            Some(SealError::KeyEncoding)
        );
    }
}
