//! Cluster CAs, signing and rotation, checked with OpenSSL and the real client.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::support::{engines, TestApp, ALICE, BOB, READER};
use magnum_test_support::{engine_tests, Engine};

fn openssl(arguments: &[&str], directory: &Path) -> (bool, String) {
    let output = Command::new("openssl")
        .args(arguments)
        .current_dir(directory)
        .output()
        .expect("openssl runs (scripts/test installs it)");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

pub(crate) fn new_csr(directory: &Path, name: &str) -> String {
    let (ok, output) = openssl(
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            "/CN=admin/O=system:masters",
        ],
        directory,
    );
    assert!(ok, "{output}");
    std::fs::read_to_string(directory.join(format!("{name}.csr"))).unwrap()
}

fn verifies(directory: &Path, ca: &str, certificate: &str) -> bool {
    std::fs::write(directory.join("ca.pem"), ca).unwrap();
    std::fs::write(directory.join("cert.pem"), certificate).unwrap();
    openssl(&["verify", "-CAfile", "ca.pem", "cert.pem"], directory).0
}

async fn built_cluster(app: &TestApp) -> String {
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let reply = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            ALICE,
            Some(json!({"cluster_template_id": "t", "name": "c1"})),
        )
        .await;
    let uuid = reply.body["uuid"].as_str().unwrap().to_owned();
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    uuid
}

async fn sign(app: &TestApp, cluster: &str, csr: &str) -> Value {
    let reply = app
        .send_at(
            "latest",
            "POST",
            "/v1/certificates",
            ALICE,
            Some(json!({"cluster_uuid": cluster, "csr": csr})),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.raw));
    reply.body
}

async fn ca_and_sign_and_rotate(app: &TestApp, engine: &str) {
    let work = tempfile::tempdir().unwrap();
    let uuid = built_cluster(app).await;
    let ca = app
        .send_at(
            "latest",
            "GET",
            &format!("/v1/certificates/{uuid}"),
            ALICE,
            None,
        )
        .await;
    assert_eq!(ca.status, 200, "{engine}");
    let mut keys: Vec<&String> = ca.body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["cluster_uuid", "links", "pem"]);
    let ca_pem = ca.body["pem"].as_str().unwrap().to_owned();
    assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    // The other CAs are different ones.
    for kind in ["etcd", "front_proxy", "front-proxy"] {
        let other = app
            .send_at(
                "latest",
                "GET",
                &format!("/v1/certificates/{uuid}?ca_cert_type={kind}"),
                ALICE,
                None,
            )
            .await;
        assert_eq!(other.status, 200);
        assert_ne!(other.body["pem"], ca.body["pem"]);
    }

    let csr = new_csr(work.path(), "client");
    let signed = sign(app, "c1", &csr).await;
    assert_eq!(signed["cluster_uuid"], uuid.as_str());
    assert_eq!(signed["csr"], csr.as_str());
    let first = signed["pem"].as_str().unwrap().to_owned();
    assert!(
        verifies(work.path(), &ca_pem, &first),
        "{engine}: signed by the cluster CA"
    );
    std::fs::write(work.path().join("signed.pem"), &first).unwrap();
    let (_, text) = openssl(
        &[
            "x509",
            "-in",
            "signed.pem",
            "-noout",
            "-subject",
            "-ext",
            "extendedKeyUsage",
        ],
        work.path(),
    );
    assert!(text.contains("CN = admin, O = system:masters"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");

    // Refusals.
    for (body, message) in [
        (
            json!({"cluster_uuid": uuid, "csr": "not a csr"}),
            "Received invalid csr",
        ),
        (
            json!({"cluster_uuid": "nope", "csr": csr}),
            "Cluster nope could not be found.",
        ),
    ] {
        let reply = app
            .send_at("latest", "POST", "/v1/certificates", ALICE, Some(body))
            .await;
        assert_eq!(reply.status, 400);
        assert!(reply.detail().starts_with(message), "{}", reply.detail());
    }
    let reply = app
        .send_at(
            "latest",
            "POST",
            "/v1/certificates",
            ALICE,
            Some(json!({"bay_uuid": uuid, "csr": csr})),
        )
        .await;
    assert_eq!(reply.status, 400);
    // Certificates are per creating user; other projects do not see the cluster.
    assert_eq!(
        app.send_at(
            "latest",
            "GET",
            &format!("/v1/certificates/{uuid}"),
            READER,
            None
        )
        .await
        .status,
        403
    );
    assert_eq!(
        app.send_at(
            "latest",
            "GET",
            &format!("/v1/certificates/{uuid}"),
            BOB,
            None
        )
        .await
        .status,
        404
    );

    // Rotation: an empty octet-stream body, as magnumclient sends it.
    let reply = app
        .send(
            "PATCH",
            &format!("/v1/certificates/{uuid}"),
            Some(ALICE),
            &[("Content-Type", "application/octet-stream")],
            Some(Value::String(String::new())),
        )
        .await;
    assert_eq!(
        (reply.status, reply.body.clone()),
        (202, json!({"uuid": uuid})),
        "{engine}"
    );
    app.wait_for_status(&uuid, ALICE, "UPDATE_COMPLETE").await;
    let rotated = app
        .send_at(
            "latest",
            "GET",
            &format!("/v1/certificates/{uuid}"),
            ALICE,
            None,
        )
        .await;
    let new_ca = rotated.body["pem"].as_str().unwrap().to_owned();
    assert_ne!(new_ca, ca_pem);
    assert!(
        !verifies(work.path(), &new_ca, &first),
        "the old certificate no longer verifies"
    );
    let second = sign(app, &uuid, &csr).await["pem"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(verifies(work.path(), &new_ca, &second));
    let reply = app
        .send(
            "PATCH",
            &format!("/v1/certificates/{uuid}"),
            Some(ALICE),
            &[],
            Some(Value::String("null".to_owned())),
        )
        .await;
    assert_eq!(
        (reply.status, reply.detail()),
        (400, "Request must be a JSON dict")
    );

    // Credentials: from 1.12, and this driver has none to rotate.
    let reply = app
        .send_at(
            "1.11",
            "PATCH",
            &format!("/v1/credentials/{uuid}"),
            ALICE,
            None,
        )
        .await;
    assert_eq!(reply.status, 406);
    let reply = app
        .send_at(
            "latest",
            "PATCH",
            &format!("/v1/credentials/{uuid}"),
            ALICE,
            None,
        )
        .await;
    assert_eq!(
        (reply.status, reply.detail()),
        (400, "Credential rotation is not supported by driver.")
    );

    // Keys are sealed in the database and appear in no answer or notification.
    {
        use sqlx::{Connection, Row};
        sqlx::any::install_default_drivers();
        let mut connection = sqlx::AnyConnection::connect(&app.database_url)
            .await
            .unwrap();
        let rows = sqlx::query("SELECT cert_pem, sealed_key FROM cluster_certificate")
            .fetch_all(&mut connection)
            .await
            .unwrap();
        assert_eq!(rows.len(), 3);
        for row in rows {
            let sealed: Vec<u8> = row
                .try_get::<String, _>("sealed_key")
                .map(String::into_bytes)
                .or_else(|_| row.try_get::<Vec<u8>, _>("sealed_key"))
                .unwrap();
            let sealed = String::from_utf8(sealed).unwrap();
            assert!(sealed.starts_with("aes256gcm:"), "{engine}");
            assert!(!sealed.contains("PRIVATE"));
        }
        connection.close().await.unwrap();
    }
    let notifications = std::fs::read_to_string(&app.notifications).unwrap_or_default();
    assert!(!notifications.contains("PRIVATE KEY"));

    // The CAs go with the cluster.
    assert_eq!(
        app.delete(&format!("/v1/clusters/{uuid}"), ALICE)
            .await
            .status,
        204
    );
    app.wait_for_cluster(&uuid, ALICE, 20, |reply| reply.status == 404)
        .await;
    assert_eq!(
        app.send_at(
            "latest",
            "GET",
            &format!("/v1/certificates/{uuid}"),
            ALICE,
            None
        )
        .await
        .status,
        404
    );
}

engine_tests!(cluster_cas_sign_csrs_and_rotate_on_every_engine);
async fn cluster_cas_sign_csrs_and_rotate_on_every_engine(engine: Engine) {
    let (app, _driver) = TestApp::spawn_scripted(engine).await;
    ca_and_sign_and_rotate(&app, engine.name()).await;
    app.stop().await;
}

#[tokio::test]
async fn local_key_storage_keeps_keys_in_private_files() {
    let engine = engines()[0];
    let (app, _driver) = TestApp::spawn_scripted_with(engine, |config| {
        config.certificates.cert_manager_type = magnumd::config::CertManagerType::Local;
    })
    .await;
    let state_dir = app.notifications.parent().unwrap().to_owned();
    let uuid = built_cluster(&app).await;
    let directory = state_dir.join("certificates").join(&uuid);
    // One 0600 file per CA, named after its certificate: `<kind>-<sha256>.key`.
    let key_files = || {
        use std::os::unix::fs::PermissionsExt;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&directory).unwrap() {
            let entry = entry.unwrap();
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", entry.path().display());
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        names
    };
    let created = key_files();
    assert_eq!(created.len(), 3, "{created:?}");
    for (name, kind) in created.iter().zip(["etcd", "front_proxy", "kubernetes"]) {
        let fingerprint = name
            .strip_prefix(&format!("{kind}-"))
            .and_then(|rest| rest.strip_suffix(".key"))
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(fingerprint.len(), 64, "{name}");
    }
    let work = tempfile::tempdir().unwrap();
    let csr = new_csr(work.path(), "client");
    let signed = sign(&app, &uuid, &csr).await;
    let ca_pem = || async {
        app.send_at(
            "latest",
            "GET",
            &format!("/v1/certificates/{uuid}"),
            ALICE,
            None,
        )
        .await
        .body["pem"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first_ca = ca_pem().await;
    assert!(verifies(
        work.path(),
        &first_ca,
        signed["pem"].as_str().unwrap()
    ));
    // A rotation leaves the new CAs' keys, and only those.
    let reply = app
        .send_at(
            "latest",
            "PATCH",
            &format!("/v1/certificates/{uuid}"),
            ALICE,
            None,
        )
        .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    app.wait_for_status(&uuid, ALICE, "UPDATE_COMPLETE").await;
    let rotated = key_files();
    assert_eq!(rotated.len(), 3, "{rotated:?}");
    assert!(rotated.iter().all(|name| !created.contains(name)));
    let new_ca = ca_pem().await;
    assert_ne!(new_ca, first_ca);
    let signed = sign(&app, &uuid, &csr).await;
    assert!(verifies(
        work.path(),
        &new_ca,
        signed["pem"].as_str().unwrap()
    ));
    assert_eq!(
        app.delete(&format!("/v1/clusters/{uuid}"), ALICE)
            .await
            .status,
        204
    );
    app.wait_for_cluster(&uuid, ALICE, 20, |reply| reply.status == 404)
        .await;
    assert!(!directory.exists(), "key files go with the cluster");
    app.stop().await;
}
