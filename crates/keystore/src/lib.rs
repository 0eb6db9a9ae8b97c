//! The cluster CAs and where their private keys live, after `cert_manager_type`:
//! `x509keypair` seals keys with AES-256-GCM (under a key read from a 0600 file) into the
//! database beside the certificate; `local` writes them as 0600 files under the state
//! directory. Certificates are always in the database. Keys are never logged or returned.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use magnum_certs::{generate_ca, sign_csr, CaMaterial, CertError, KeySealer};
use magnum_domain::time::Timestamp;
use magnum_store::{Store, StoreError, StoredCertificate};
use uuid::Uuid;

/// The CAs every cluster has (`ca_cert_type`), in upstream's names.
pub const CA_KINDS: [&str; 3] = ["kubernetes", "etcd", "front_proxy"];

/// `ca_cert_type` as upstream reads it: absent or unknown means the cluster CA.
pub fn ca_kind(ca_cert_type: Option<&str>) -> &'static str {
    match ca_cert_type {
        Some("etcd") => "etcd",
        Some("front_proxy" | "front-proxy") => "front_proxy",
        _ => "kubernetes",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Certificate(#[from] CertError),
    #[error("the certificate authority of this cluster is not ready yet")]
    NotReady,
    #[error("the key of a stored certificate cannot be read: {0}")]
    Key(String),
    #[error("{0}")]
    Setup(String),
}

/// Where keys go.
pub enum KeyStorage {
    Database(Box<KeySealer>),
    Files(PathBuf),
}

/// Reads (or, when `create` is set and it is missing, creates) the key file of the
/// `x509keypair` storage. A file others can read is refused: it guards every CA key.
pub fn load_key_file(path: &Path, create: bool) -> Result<KeySealer, KeystoreError> {
    if !path.exists() && create {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|error| {
                KeystoreError::Setup(format!(
                    "cannot create the key file {}: {error}",
                    path.display()
                ))
            })?;
        file.write_all(KeySealer::generate_key_text().as_bytes())
            .map_err(|error| {
                KeystoreError::Setup(format!("cannot write {}: {error}", path.display()))
            })?;
    }
    let metadata = std::fs::metadata(path).map_err(|error| {
        KeystoreError::Setup(format!(
            "cannot read the key file {}: {error}",
            path.display()
        ))
    })?;
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(KeystoreError::Setup(format!(
            "the key file {} is readable by others (mode {:o}): it must be mode 0600",
            path.display(),
            metadata.permissions().mode() & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|error| {
        KeystoreError::Setup(format!("cannot read {}: {error}", path.display()))
    })?;
    KeySealer::from_key_text(&text)
        .map_err(|error| KeystoreError::Setup(format!("the key file {}: {error}", path.display())))
}

/// The CAs of clusters.
#[derive(Clone)]
pub struct ClusterCertificates {
    store: Store,
    storage: Arc<KeyStorage>,
    /// Days a signed client certificate is valid (`[x509] term_of_validity`).
    pub certificate_validity_days: i64,
    /// Days a CA is valid.
    pub ca_validity_days: i64,
}

fn seal_context(cluster: Uuid, kind: &str) -> String {
    format!("{cluster}/{kind}")
}

impl ClusterCertificates {
    pub fn new(store: Store, storage: KeyStorage, certificate_validity_days: i64) -> Self {
        Self {
            store,
            storage: Arc::new(storage),
            certificate_validity_days,
            ca_validity_days: 3650,
        }
    }

    fn key_path(directory: &Path, cluster: Uuid, kind: &str) -> PathBuf {
        directory
            .join(cluster.to_string())
            .join(format!("{kind}.key"))
    }

    /// New CAs for a cluster, with their keys stored as configured; the records to insert.
    fn generate(
        &self,
        cluster: Uuid,
        common_name: &str,
    ) -> Result<Vec<StoredCertificate>, KeystoreError> {
        let mut records = Vec::new();
        for kind in CA_KINDS {
            let material = generate_ca(common_name, self.ca_validity_days)?;
            let sealed_key = match self.storage.as_ref() {
                KeyStorage::Database(sealer) => {
                    Some(sealer.seal(material.key_pem.as_bytes(), &seal_context(cluster, kind)))
                }
                KeyStorage::Files(directory) => {
                    write_private(
                        &Self::key_path(directory, cluster, kind),
                        material.key_pem.as_bytes(),
                    )?;
                    None
                }
            };
            records.push(StoredCertificate {
                cluster_uuid: cluster,
                kind: kind.to_owned(),
                cert_pem: material.cert_pem,
                sealed_key,
                created_at: Timestamp::now(),
            });
        }
        Ok(records)
    }

    /// Makes the cluster's CAs unless it has them: a resumed create keeps the first ones.
    pub async fn ensure(&self, cluster: Uuid, common_name: &str) -> Result<(), KeystoreError> {
        if self
            .store
            .cluster_certificate(cluster, "kubernetes")
            .await?
            .is_some()
        {
            return Ok(());
        }
        let records = self.generate(cluster, common_name)?;
        self.store
            .insert_cluster_certificates_once(&records)
            .await?;
        Ok(())
    }

    /// Replaces every CA of the cluster with new ones.
    pub async fn rotate(&self, cluster: Uuid, common_name: &str) -> Result<(), KeystoreError> {
        let records = self.generate(cluster, common_name)?;
        self.store
            .replace_cluster_certificates(cluster, &records)
            .await?;
        Ok(())
    }

    /// The CA certificate (no key).
    pub async fn certificate(&self, cluster: Uuid, kind: &str) -> Result<String, KeystoreError> {
        Ok(self
            .store
            .cluster_certificate(cluster, kind)
            .await?
            .ok_or(KeystoreError::NotReady)?
            .cert_pem)
    }

    /// The CA with its key, for signing.
    pub async fn authority(&self, cluster: Uuid, kind: &str) -> Result<CaMaterial, KeystoreError> {
        let stored = self
            .store
            .cluster_certificate(cluster, kind)
            .await?
            .ok_or(KeystoreError::NotReady)?;
        let key_pem = match (self.storage.as_ref(), &stored.sealed_key) {
            (KeyStorage::Database(sealer), Some(sealed)) => {
                let bytes = sealer
                    .open(sealed, &seal_context(cluster, kind))
                    .map_err(|error| KeystoreError::Key(error.to_string()))?;
                String::from_utf8(bytes).map_err(|_| KeystoreError::Key("not UTF-8".to_owned()))?
            }
            (KeyStorage::Files(directory), _) => std::fs::read_to_string(Self::key_path(directory, cluster, kind))
                .map_err(|error| KeystoreError::Key(error.to_string()))?,
            (KeyStorage::Database(_), None) => {
                return Err(KeystoreError::Key(
                    "the key was stored as a file (cert_manager_type local) but x509keypair is configured".to_owned(),
                ))
            }
        };
        Ok(CaMaterial {
            cert_pem: stored.cert_pem,
            key_pem,
        })
    }

    /// Signs a CSR with the cluster's CA of `kind`.
    pub async fn sign(
        &self,
        cluster: Uuid,
        kind: &str,
        csr_pem: &str,
    ) -> Result<String, KeystoreError> {
        let authority = self.authority(cluster, kind).await?;
        Ok(sign_csr(
            &authority,
            csr_pem,
            self.certificate_validity_days,
        )?)
    }

    /// Removes key files of a deleted cluster (the rows go with the cluster).
    pub fn forget(&self, cluster: Uuid) {
        if let KeyStorage::Files(directory) = self.storage.as_ref() {
            let _ = std::fs::remove_dir_all(directory.join(cluster.to_string()));
        }
    }
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), KeystoreError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .and_then(|()| std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700)))
        .map_err(|error| {
            KeystoreError::Setup(format!("cannot create {}: {error}", parent.display()))
        })?;
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|error| {
            KeystoreError::Setup(format!("cannot write {}: {error}", temporary.display()))
        })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|error| KeystoreError::Setup(format!("cannot write {}: {error}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_cert_types_map_as_upstream() {
        assert_eq!(ca_kind(None), "kubernetes");
        assert_eq!(ca_kind(Some("anything")), "kubernetes");
        assert_eq!(ca_kind(Some("etcd")), "etcd");
        assert_eq!(ca_kind(Some("front-proxy")), "front_proxy");
        assert_eq!(ca_kind(Some("front_proxy")), "front_proxy");
    }

    #[test]
    fn key_files_must_be_private() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("key");
        load_key_file(&path, true).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        load_key_file(&path, false).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = load_key_file(&path, false).err().unwrap().to_string();
        assert!(refused.contains("must be mode 0600"), "{refused}");
        let missing = load_key_file(&directory.path().join("none"), false)
            .err()
            .unwrap()
            .to_string();
        assert!(missing.contains("cannot read the key file"), "{missing}");
        std::fs::write(directory.path().join("bad"), "xyz").unwrap();
        std::fs::set_permissions(
            directory.path().join("bad"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        assert!(load_key_file(&directory.path().join("bad"), false).is_err());
    }
}
