//! `cloud-stand-in`: the Glance, Nova and Neutron stand-ins of magnum-test-support as a
//! process, for trying a dashboard (Horizon) against magnum-rs by hand. Reads the test
//! Keystone's fixture (`MAGNUM_TEST_KEYSTONE_FIXTURE`, else .work/keystone/fixture.json),
//! seeds the stand-ins for the fixture user `alpha-member` (see
//! `CloudStandIn::seed_for_dashboards`), registers them — and magnum-rs at `MAGNUM_URL` when
//! set — in a region of their own, prints one JSON line `{"region", "scripted_cloud"}`
//! (give `scripted_cloud` to `magnumd-testbed` as `MAGNUM_TESTBED_SCRIPTED_CLOUD`), and
//! logs each request it answers on stderr and serves until stdin closes, Ctrl-C or SIGTERM, then removes the region again.

use magnum_test_support::catalog::CatalogRegion;
use magnum_test_support::cloud::CloudStandIn;

#[tokio::main]
async fn main() -> Result<(), String> {
    let fixture = magnum_test_support::keystone_fixture();
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
    let auth_url = text(&fixture["auth_url"]);
    let admin = &fixture["admin"];
    let login = (
        text(&admin["user"]),
        text(&admin["password"]),
        text(&admin["project"]),
    );
    let login = (login.0.as_str(), login.1.as_str(), login.2.as_str());
    let user = &fixture["users"]["alpha-member"];
    let cloud = CloudStandIn::start(&auth_url, login).await?;
    cloud.seed_for_dashboards(
        (&text(&user["user_id"]), "alpha"),
        &text(&user["project_id"]),
        &text(&admin["project_id"]),
    );
    let mut region = CatalogRegion::create(&auth_url, login, "dashboards").await?;
    let registered = async {
        for (service_type, url) in cloud.endpoints() {
            region.register(service_type, &url).await?;
        }
        if let Ok(magnum_url) = std::env::var("MAGNUM_URL") {
            region.register("container-infra", &magnum_url).await?;
        }
        Ok::<_, String>(())
    }
    .await;
    if let Err(error) = registered {
        region.remove().await?;
        return Err(error);
    }
    println!(
        "{}",
        serde_json::json!({"region": region.region, "scripted_cloud": cloud.scripted_cloud().to_json()})
    );
    // Every request, on stderr, once a second.
    let cloud = std::sync::Arc::new(cloud);
    let watched = cloud.clone();
    tokio::spawn(async move {
        let mut shown = 0;
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let seen = watched.seen();
            for request in seen.iter().skip(shown) {
                eprintln!("{} {}?{}", request.method, request.path, request.query);
            }
            shown = seen.len();
        }
    });
    // stdin is read on a thread of its own (a blocking read), which says when it closed.
    let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = closed.send(());
    });
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|error| error.to_string())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        _ = stdin_closed => {}
    }
    region.remove().await
}
