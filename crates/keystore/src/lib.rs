//! The cluster CAs and where their private keys live, after `cert_manager_type`:
//! `x509keypair` seals keys with AES-256-GCM (under a key read from a 0600 file) into the
//! database beside the certificate; `local` writes them as 0600 files under the state
//! directory. Certificates are always in the database. Keys are never logged or returned.
//!
//! Key files are named after their certificate's fingerprint (`<cluster>/<kind>-<sha256>.key`),
//! so a rotation writes new keys beside the old ones, switches the certificates in one
//! transaction, and only then removes the old keys: whenever it stops (a crash, or another
//! rotation of the same cluster in between), the stored certificate's key is on disk, and a
//! reader checks that the key it found is that certificate's.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use magnum_certs::{
    certificate_fingerprint, generate_ca, key_matches_certificate, sign_csr, CaMaterial, CertError,
    KeySealer,
};
use magnum_domain::time::Timestamp;
use magnum_store::{Store, StoreError, StoredCertificate, StoredCredential};
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

    /// The key file of the CA certificate `cert_pem`: named after the certificate, so a new
    /// key never replaces the one a stored certificate needs.
    fn key_path(
        directory: &Path,
        cluster: Uuid,
        kind: &str,
        cert_pem: &str,
    ) -> Result<PathBuf, KeystoreError> {
        let fingerprint = certificate_fingerprint(cert_pem)
            .map_err(|error| KeystoreError::Key(error.to_string()))?;
        Ok(directory
            .join(cluster.to_string())
            .join(format!("{kind}-{fingerprint}.key")))
    }

    /// Where keys were written before they were named after their certificate; still read
    /// when its key is the stored certificate's.
    fn legacy_key_path(directory: &Path, cluster: Uuid, kind: &str) -> PathBuf {
        directory
            .join(cluster.to_string())
            .join(format!("{kind}.key"))
    }

    /// New CAs for a cluster, with their keys stored as configured; the records to insert.
    /// Key files get names of their own: nothing stored is touched.
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
                        &Self::key_path(directory, cluster, kind, &material.cert_pem)?,
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

    /// The cluster's stored CAs, those it has.
    async fn stored(&self, cluster: Uuid) -> Result<Vec<StoredCertificate>, KeystoreError> {
        let mut stored = Vec::new();
        for kind in CA_KINDS {
            if let Some(certificate) = self.store.cluster_certificate(cluster, kind).await? {
                stored.push(certificate);
            }
        }
        Ok(stored)
    }

    /// Removes the key files of `certificates` (none in `x509keypair` storage), and a key
    /// file of the old naming beside them, which only certificates these replaced can need.
    fn remove_keys(&self, cluster: Uuid, certificates: &[StoredCertificate]) {
        let KeyStorage::Files(directory) = self.storage.as_ref() else {
            return;
        };
        for certificate in certificates {
            if let Ok(path) =
                Self::key_path(directory, cluster, &certificate.kind, &certificate.cert_pem)
            {
                let _ = std::fs::remove_file(path);
            }
            let _ =
                std::fs::remove_file(Self::legacy_key_path(directory, cluster, &certificate.kind));
        }
    }

    /// The key files of `records` that are not the stored ones: the work of a rotation or
    /// creation that lost to another, removed when it is known to have lost.
    async fn remove_unstored_keys(&self, cluster: Uuid, records: &[StoredCertificate]) {
        let Ok(stored) = self.stored(cluster).await else {
            // Unknown: a key that might be stored stays.
            return;
        };
        let unstored: Vec<StoredCertificate> = records
            .iter()
            .filter(|record| {
                !stored
                    .iter()
                    .any(|stored| stored.cert_pem == record.cert_pem)
            })
            .cloned()
            .collect();
        if let KeyStorage::Files(directory) = self.storage.as_ref() {
            let directory = directory.clone();
            // Best effort: a key file left behind is removed with the cluster.
            let _ = off_runtime(move || {
                for record in unstored {
                    if let Ok(path) =
                        Self::key_path(&directory, cluster, &record.kind, &record.cert_pem)
                    {
                        let _ = std::fs::remove_file(path);
                    }
                }
                Ok(())
            })
            .await;
        }
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
        let records = self.generate_off_runtime(cluster, common_name).await?;
        self.store
            .insert_cluster_certificates_once(&records)
            .await?;
        // Another process may have made them first; its keys are the ones kept.
        self.remove_unstored_keys(cluster, &records).await;
        Ok(())
    }

    /// Replaces every CA of the cluster with new ones: new keys are written beside the old
    /// ones, the certificates switched in one transaction, the old keys removed after.
    pub async fn rotate(&self, cluster: Uuid, common_name: &str) -> Result<(), KeystoreError> {
        let rotation = self.begin_rotation(cluster, common_name).await?;
        if let Err(error) = self.switch(&rotation).await {
            // A commit whose answer was lost may still have switched: only keys known not
            // to be stored go.
            self.remove_unstored_keys(cluster, &rotation.records).await;
            return Err(error);
        }
        self.finish_rotation(&rotation).await;
        Ok(())
    }

    /// Rotation, step 1: the CAs it replaces are noted and new ones made, their keys written
    /// under new names. A crash here leaves unused key files, removed with the cluster.
    async fn begin_rotation(
        &self,
        cluster: Uuid,
        common_name: &str,
    ) -> Result<Rotation, KeystoreError> {
        let replaced = self.stored(cluster).await?;
        let records = self.generate_off_runtime(cluster, common_name).await?;
        Ok(Rotation {
            cluster,
            replaced,
            records,
        })
    }

    /// Rotation, step 2: the new certificates become the cluster's, all in one transaction.
    async fn switch(&self, rotation: &Rotation) -> Result<(), KeystoreError> {
        self.store
            .replace_cluster_certificates(rotation.cluster, &rotation.records)
            .await?;
        Ok(())
    }

    /// Rotation, step 3: the keys of the replaced certificates go. Those certificates can
    /// never be stored again (a rotation only ever stores the ones it made), so no reader
    /// can need these keys after a switch; a reader that read a replaced certificate just
    /// before finds its key gone and reads again.
    async fn finish_rotation(&self, rotation: &Rotation) {
        let this = self.clone();
        let (cluster, replaced) = (rotation.cluster, rotation.replaced.clone());
        let _ = off_runtime(move || {
            this.remove_keys(cluster, &replaced);
            Ok(())
        })
        .await;
    }

    /// [`Self::generate`] off the async runtime: key generation and fsynced key files.
    async fn generate_off_runtime(
        &self,
        cluster: Uuid,
        common_name: &str,
    ) -> Result<Vec<StoredCertificate>, KeystoreError> {
        let this = self.clone();
        let common_name = common_name.to_owned();
        off_runtime(move || this.generate(cluster, &common_name)).await
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
        // A rotation may remove the key of the certificate just read (after switching to a
        // new one): the certificate is then read again.
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
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
                    String::from_utf8(bytes)
                        .map_err(|_| KeystoreError::Key("not UTF-8".to_owned()))?
                }
                (KeyStorage::Files(directory), _) => {
                    let (directory, owned_kind, cert_pem) =
                        (directory.clone(), kind.to_owned(), stored.cert_pem.clone());
                    let read = off_runtime(move || {
                        Self::read_key_file(&directory, cluster, &owned_kind, &cert_pem)
                    })
                    .await?;
                    match read {
                        Some(key_pem) => key_pem,
                        None if attempt < ATTEMPTS => continue,
                        None => {
                            return Err(KeystoreError::Key(
                                "no key file holds the key of the stored certificate".to_owned(),
                            ))
                        }
                    }
                }
                (KeyStorage::Database(_), None) => {
                    return Err(KeystoreError::Key(
                        "the key was stored as a file (cert_manager_type local) but x509keypair is configured".to_owned(),
                    ))
                }
            };
            return Ok(CaMaterial {
                cert_pem: stored.cert_pem,
                key_pem,
            });
        }
        Err(KeystoreError::NotReady)
    }

    /// The key of `cert_pem` from its file (or the file of the old naming, when it holds
    /// this certificate's key); `None` when there is none.
    fn read_key_file(
        directory: &Path,
        cluster: Uuid,
        kind: &str,
        cert_pem: &str,
    ) -> Result<Option<String>, KeystoreError> {
        let candidates = [
            Self::key_path(directory, cluster, kind, cert_pem)?,
            Self::legacy_key_path(directory, cluster, kind),
        ];
        for path in candidates {
            let key_pem = match std::fs::read_to_string(&path) {
                Ok(key_pem) => key_pem,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(KeystoreError::Key(error.to_string())),
            };
            let matches = key_matches_certificate(cert_pem, &key_pem)
                .map_err(|error| KeystoreError::Key(error.to_string()))?;
            if matches {
                return Ok(Some(key_pem));
            }
        }
        Ok(None)
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

    /// Seals the secret of a credential delegated to `cluster` for storage beside it (`Some`),
    /// or writes it to a 0600 file of the state directory (`None`), as CA keys are.
    pub async fn seal_credential(
        &self,
        cluster: Uuid,
        credential_id: &str,
        secret: &str,
    ) -> Result<Option<String>, KeystoreError> {
        let context = seal_context(cluster, &format!("credential/{credential_id}"));
        match self.storage.as_ref() {
            KeyStorage::Database(sealer) => Ok(Some(sealer.seal(secret.as_bytes(), &context))),
            KeyStorage::Files(directory) => {
                let path = Self::credential_path(directory, cluster, credential_id)?;
                let secret = secret.to_owned();
                off_runtime(move || write_private(&path, secret.as_bytes())).await?;
                Ok(None)
            }
        }
    }

    /// The secret of a stored delegated credential.
    pub async fn unseal_credential(
        &self,
        stored: &StoredCredential,
    ) -> Result<String, KeystoreError> {
        let cluster = stored.cluster_uuid;
        let context = seal_context(cluster, &format!("credential/{}", stored.credential_id));
        let bytes = match (self.storage.as_ref(), &stored.sealed_secret) {
            (KeyStorage::Database(sealer), Some(sealed)) => sealer
                .open(sealed, &context)
                .map_err(|error| KeystoreError::Key(error.to_string()))?,
            (KeyStorage::Files(directory), _) => {
                let path = Self::credential_path(directory, cluster, &stored.credential_id)?;
                off_runtime(move || {
                    std::fs::read(&path).map_err(|error| {
                        KeystoreError::Key(format!("cannot read {}: {error}", path.display()))
                    })
                })
                .await?
            }
            (KeyStorage::Database(_), None) => {
                return Err(KeystoreError::Key(
                    "the credential's secret was stored in a file, and certificates.cert_manager_type is now x509keypair".to_owned(),
                ))
            }
        };
        String::from_utf8(bytes).map_err(|_| KeystoreError::Key("not UTF-8".to_owned()))
    }

    fn credential_path(
        directory: &Path,
        cluster: Uuid,
        credential_id: &str,
    ) -> Result<PathBuf, KeystoreError> {
        // Keystone's ids are hex; anything else must not name a path.
        if credential_id.is_empty() || !credential_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(KeystoreError::Key(format!(
                "{credential_id:?} is not an application credential id"
            )));
        }
        Ok(directory
            .join(cluster.to_string())
            .join(format!("credential-{credential_id}.secret")))
    }

    /// Removes key files of a deleted cluster (the rows go with the cluster).
    pub async fn forget(&self, cluster: Uuid) {
        if let KeyStorage::Files(directory) = self.storage.as_ref() {
            let directory = directory.join(cluster.to_string());
            let removed = off_runtime(move || match std::fs::remove_dir_all(&directory) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(
                    KeystoreError::Key(format!("cannot remove {}: {error}", directory.display())),
                ),
                _ => Ok(()),
            })
            .await;
            if let Err(error) = removed {
                tracing::warn!(cluster.id = %cluster, %error, "key files of a deleted cluster stay");
            }
        }
    }
}

/// A rotation under way: the certificates it replaces and the ones it made (whose keys are
/// written).
struct Rotation {
    cluster: Uuid,
    replaced: Vec<StoredCertificate>,
    records: Vec<StoredCertificate>,
}

/// Runs blocking work (key generation, key files written with fsync) off the async runtime.
async fn off_runtime<T, F>(work: F) -> Result<T, KeystoreError>
where
    F: FnOnce() -> Result<T, KeystoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| KeystoreError::Setup(format!("a key task stopped: {error}")))?
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

    /// A keystore with `local` storage over a fresh SQLite database, both in `scratch`.
    async fn local_keystore(scratch: &Path) -> ClusterCertificates {
        let url = format!("sqlite://{}", scratch.join("magnum.sqlite").display());
        let store = Store::connect(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        ClusterCertificates::new(store, KeyStorage::Files(scratch.join("keys")), 30)
    }

    /// Every stored CA of the cluster comes with its own key, and signs.
    async fn assert_every_ca_has_its_key(
        keystore: &ClusterCertificates,
        cluster: Uuid,
        step: &str,
    ) {
        for kind in CA_KINDS {
            let stored = keystore.certificate(cluster, kind).await.unwrap();
            let authority = keystore
                .authority(cluster, kind)
                .await
                .unwrap_or_else(|error| panic!("{step}: the {kind} key cannot be read: {error}"));
            assert_eq!(authority.cert_pem, stored, "{step}: {kind}");
            assert!(
                key_matches_certificate(&authority.cert_pem, &authority.key_pem).unwrap(),
                "{step}: the {kind} key is not the stored certificate's"
            );
        }
    }

    fn key_files(scratch: &Path, cluster: Uuid) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(scratch.join("keys").join(cluster.to_string()))
                .map(|entries| {
                    entries
                        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
        names.sort();
        names
    }

    async fn stored_pems(keystore: &ClusterCertificates, cluster: Uuid) -> Vec<String> {
        let mut pems = Vec::new();
        for kind in CA_KINDS {
            pems.push(keystore.certificate(cluster, kind).await.unwrap());
        }
        pems
    }

    #[tokio::test]
    async fn a_rotation_stopped_between_its_steps_leaves_every_stored_ca_with_its_key() {
        let scratch = tempfile::tempdir().unwrap();
        let keystore = local_keystore(scratch.path()).await;
        let cluster = Uuid::new_v4();
        keystore.ensure(cluster, "k").await.unwrap();
        assert_eq!(key_files(scratch.path(), cluster).len(), 3);
        let before = stored_pems(&keystore, cluster).await;
        assert_every_ca_has_its_key(&keystore, cluster, "created").await;

        // A crash after the new keys are written, before the switch: nothing changed for
        // readers, and the old certificates still sign.
        let crashed = keystore.begin_rotation(cluster, "k").await.unwrap();
        drop(crashed);
        assert_eq!(stored_pems(&keystore, cluster).await, before);
        assert_every_ca_has_its_key(&keystore, cluster, "crash before the switch").await;
        assert_eq!(key_files(scratch.path(), cluster).len(), 6);

        // A crash after the switch, before the old keys are removed: the new ones are read.
        let rotation = keystore.begin_rotation(cluster, "k").await.unwrap();
        keystore.switch(&rotation).await.unwrap();
        let after = stored_pems(&keystore, cluster).await;
        assert!(after.iter().all(|pem| !before.contains(pem)));
        assert_every_ca_has_its_key(&keystore, cluster, "crash after the switch").await;
        keystore.finish_rotation(&rotation).await;
        assert_every_ca_has_its_key(&keystore, cluster, "finished").await;

        // A whole rotation removes the keys of what it replaced, and nothing else.
        let files_before = key_files(scratch.path(), cluster);
        keystore.rotate(cluster, "k").await.unwrap();
        assert_every_ca_has_its_key(&keystore, cluster, "rotated").await;
        let files_after = key_files(scratch.path(), cluster);
        assert_eq!(files_after.len(), files_before.len());
        for kind in CA_KINDS {
            let replaced = &after[CA_KINDS.iter().position(|k| *k == kind).unwrap()];
            let name = format!("{kind}-{}.key", certificate_fingerprint(replaced).unwrap());
            assert!(
                files_before.contains(&name) && !files_after.contains(&name),
                "{name}"
            );
        }
        keystore.forget(cluster).await;
        assert!(key_files(scratch.path(), cluster).is_empty());
    }

    #[tokio::test]
    async fn interleaved_rotations_never_leave_a_stored_ca_without_its_key() {
        // Both rotations' three steps (begin, switch, finish), in every order that keeps
        // each rotation's own order.
        let mut orders: Vec<Vec<char>> = Vec::new();
        for mask in 0u32..64 {
            if mask.count_ones() == 3 {
                orders.push(
                    (0..6)
                        .map(|bit| if mask & (1 << bit) != 0 { 'a' } else { 'b' })
                        .collect(),
                );
            }
        }
        assert_eq!(orders.len(), 20);
        let scratch = tempfile::tempdir().unwrap();
        let keystore = local_keystore(scratch.path()).await;
        for order in orders {
            let cluster = Uuid::new_v4();
            keystore.ensure(cluster, "k").await.unwrap();
            let mut rotations: [Option<Rotation>; 2] = [None, None];
            let mut steps = [0usize; 2];
            let mut made = Vec::new();
            for (index, actor) in order.iter().enumerate() {
                let which = usize::from(*actor == 'b');
                match steps[which] {
                    0 => {
                        let rotation = keystore.begin_rotation(cluster, "k").await.unwrap();
                        made.push(rotation.records.clone());
                        rotations[which] = Some(rotation);
                    }
                    1 => keystore
                        .switch(rotations[which].as_ref().unwrap())
                        .await
                        .unwrap(),
                    _ => {
                        keystore
                            .finish_rotation(rotations[which].as_ref().unwrap())
                            .await
                    }
                }
                steps[which] += 1;
                let step = format!("{} after step {index}", order.iter().collect::<String>());
                assert_every_ca_has_its_key(&keystore, cluster, &step).await;
            }
            // The rotation that switched last won; its certificates are the cluster's.
            let stored = stored_pems(&keystore, cluster).await;
            assert!(
                made.iter().any(|records| records
                    .iter()
                    .map(|record| &record.cert_pem)
                    .eq(stored.iter())),
                "{order:?}"
            );
        }
    }

    #[tokio::test]
    async fn credential_secrets_are_sealed_per_cluster_and_credential() {
        let scratch = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}",
            scratch.path().join("magnum.sqlite").display()
        );
        let store = Store::connect(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        let sealer = load_key_file(&scratch.path().join("key"), true).unwrap();
        let sealed_store =
            ClusterCertificates::new(store.clone(), KeyStorage::Database(Box::new(sealer)), 30);
        let files =
            ClusterCertificates::new(store, KeyStorage::Files(scratch.path().join("keys")), 30);
        let (cluster, other) = (Uuid::new_v4(), Uuid::new_v4());
        let record = |cluster, id: &str, sealed_secret| StoredCredential {
            cluster_uuid: cluster,
            credential_id: id.to_owned(),
            user_id: "u1".to_owned(),
            sealed_secret,
            created_at: Timestamp::now(),
            revoke_after: None,
        };
        // Sealed in the database: the text holds no secret, and it opens only for the
        // cluster and credential it was sealed for.
        let sealed = sealed_store
            .seal_credential(cluster, "abc123", "the-secret")
            .await
            .unwrap()
            .unwrap();
        assert!(!sealed.contains("the-secret"));
        assert_eq!(
            sealed_store
                .unseal_credential(&record(cluster, "abc123", Some(sealed.clone())))
                .await
                .unwrap(),
            "the-secret"
        );
        assert!(sealed_store
            .unseal_credential(&record(other, "abc123", Some(sealed.clone())))
            .await
            .is_err());
        assert!(sealed_store
            .unseal_credential(&record(cluster, "def456", Some(sealed)))
            .await
            .is_err());
        // In a private file with `local`; an id that is not Keystone's names no path.
        assert_eq!(
            files
                .seal_credential(cluster, "abc123", "s2")
                .await
                .unwrap(),
            None
        );
        let path = scratch
            .path()
            .join("keys")
            .join(cluster.to_string())
            .join("credential-abc123.secret");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            files
                .unseal_credential(&record(cluster, "abc123", None))
                .await
                .unwrap(),
            "s2"
        );
        assert!(files
            .seal_credential(cluster, "../../etc", "s3")
            .await
            .is_err());
        files.forget(cluster).await;
        assert!(!path.exists());
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
