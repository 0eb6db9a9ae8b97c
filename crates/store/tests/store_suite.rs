//! The store test suite, run against every engine (SQLite, PostgreSQL, MariaDB).

use magnum_domain::cluster_template::{ClusterTemplate, Coe, ServerType};
use magnum_domain::labels::Labels;
use magnum_domain::time::Timestamp;
use magnum_store::{Page, SortDirection, Store, StoreError, TemplateScope};
use magnum_test_support::{engine_tests, Engine, TestDatabase};
use sqlx::Connection;
use uuid::Uuid;

pub(crate) async fn fresh_store(engine: Engine) -> (Store, TestDatabase) {
    let database = TestDatabase::create(engine).await;
    let store = Store::connect(&database.url, 4).await.expect("connect");
    let applied = store.migrate().await.expect("migrate");
    assert!(
        !applied.is_empty(),
        "{}: a fresh database gets every migration",
        engine.name()
    );
    (store, database)
}

pub(crate) async fn finish(store: Store, database: TestDatabase) {
    store.close().await;
    database.drop_database().await;
}

pub(crate) fn template(name: &str, project_id: &str) -> ClusterTemplate {
    ClusterTemplate {
        id: 0,
        uuid: Uuid::new_v4(),
        name: Some(name.to_owned()),
        coe: Coe::SwarmMode,
        image_id: "local-node".to_owned(),
        flavor_id: Some("local.small".to_owned()),
        master_flavor_id: None,
        dns_nameserver: None,
        keypair_id: None,
        external_network_id: Some("local".to_owned()),
        fixed_network: None,
        fixed_subnet: None,
        network_driver: Some("docker".to_owned()),
        volume_driver: None,
        apiserver_port: None,
        docker_volume_size: None,
        docker_storage_driver: None,
        cluster_distro: Some("local".to_owned()),
        http_proxy: None,
        https_proxy: None,
        no_proxy: None,
        registry_enabled: false,
        insecure_registry: None,
        labels: Labels::from_patch_string("{'b': '1', 'a': 'x'}").unwrap(),
        tls_disabled: false,
        public: false,
        hidden: false,
        server_type: ServerType::Vm,
        master_lb_enabled: false,
        floating_ip_enabled: true,
        tags: None,
        driver: Some("local".to_owned()),
        project_id: project_id.to_owned(),
        user_id: "u-1".to_owned(),
        created_at: Timestamp::from_unix_seconds(1_795_425_533),
        updated_at: None,
        version: 0,
    }
}

fn page(
    sort_key: &'static str,
    direction: SortDirection,
    limit: u32,
    marker: Option<Uuid>,
) -> Page {
    Page {
        sort_key,
        direction,
        limit,
        marker,
    }
}

/// Inserts a cluster row referencing the template, as the clusters API will.
async fn insert_cluster_using(database: &TestDatabase, template_uuid: Uuid) {
    let sql =
        "INSERT INTO cluster (uuid, version, name, project_id, user_id, cluster_template_id, \
               labels, floating_ip_enabled, master_lb_enabled, status, created_at) \
               VALUES ('{cluster}', 1, 'c1', 'p-1', 'u-1', '{template}', '{}', 1, 0, \
               'CREATE_IN_PROGRESS', 0)"
            .replace("{cluster}", &Uuid::new_v4().to_string())
            .replace("{template}", &template_uuid.to_string());
    let mut connection = sqlx::AnyConnection::connect(&database.url).await.unwrap();
    sqlx::query(&sql).execute(&mut connection).await.unwrap();
    connection.close().await.unwrap();
}

engine_tests!(migrations_are_recorded_and_idempotent);
async fn migrations_are_recorded_and_idempotent(engine: Engine) {
    sqlx::any::install_default_drivers();
    let (store, database) = fresh_store(engine).await;
    assert!(store.schema_is_current().await.unwrap());
    assert!(
        store.migrate().await.unwrap().is_empty(),
        "{}",
        engine.name()
    );
    let applied = store.applied_migrations().await.unwrap();
    assert_eq!(applied.len(), magnum_store::MIGRATIONS.len());
    finish(store, database).await;
}

engine_tests!(migrations_from_11_run_again_over_what_they_made);
/// MariaDB commits each DDL statement by itself: a process stopped inside migration 11, 12 or
/// 13 leaves its tables and indexes made but the version not recorded, and the next start
/// runs it again. That must succeed.
async fn migrations_from_11_run_again_over_what_they_made(engine: Engine) {
    let (store, database) = fresh_store(engine).await;
    let mut connection = sqlx::AnyConnection::connect(&database.url).await.unwrap();
    sqlx::query("DELETE FROM magnum_schema_migrations WHERE version >= 11")
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    assert!(!store.schema_is_current().await.unwrap());
    let again: Vec<i64> = store
        .migrate()
        .await
        .unwrap_or_else(|error| panic!("{}: {error}", engine.name()))
        .iter()
        .map(|migration| migration.version)
        .collect();
    let from_11: Vec<i64> = magnum_store::MIGRATIONS
        .iter()
        .map(|migration| migration.version)
        .filter(|version| *version >= 11)
        .collect();
    assert_eq!(again, from_11, "{}", engine.name());
    assert!(again.starts_with(&[11, 12, 13]));
    assert!(store.schema_is_current().await.unwrap());
    // The tables they made are the ones in use.
    assert_eq!(
        store
            .events_pruned_through(&magnum_store::EventScope::All)
            .await
            .unwrap(),
        0
    );
    finish(store, database).await;
}

engine_tests!(templates_round_trip_every_field);
async fn templates_round_trip_every_field(engine: Engine) {
    let (store, database) = fresh_store(engine).await;
    let mut original = template("t1", "p-1");
    original.apiserver_port = Some(6443);
    original.docker_volume_size = Some(5);
    original.tags = Some("a,b".to_owned());
    original.dns_nameserver = Some("8.8.8.8".to_owned());
    original.public = true;
    original.hidden = true;
    original.tls_disabled = true;
    original.name = Some("ünïcode ☃".to_owned());
    let stored = store.insert_cluster_template(&original).await.unwrap();
    assert!(stored.id > 0);
    let loaded = store
        .cluster_template_by_uuid(original.uuid, TemplateScope::All)
        .await
        .unwrap()
        .expect("stored template");
    assert_eq!(loaded, stored, "{}", engine.name());
    assert_eq!(
        loaded.labels.as_map().keys().collect::<Vec<_>>(),
        vec!["b", "a"],
        "{}: label order is kept",
        engine.name()
    );
    let duplicate = store.insert_cluster_template(&original).await.unwrap_err();
    assert!(matches!(duplicate, StoreError::DuplicateUuid(uuid) if uuid == original.uuid));
    finish(store, database).await;
}

engine_tests!(visibility_scopes_and_name_lookup);
async fn visibility_scopes_and_name_lookup(engine: Engine) {
    let (store, database) = fresh_store(engine).await;
    let own = store
        .insert_cluster_template(&template("same", "p-1"))
        .await
        .unwrap();
    let mut public = template("same", "p-2");
    public.public = true;
    let public = store.insert_cluster_template(&public).await.unwrap();
    let mut hidden = template("hidden", "p-2");
    hidden.public = true;
    hidden.hidden = true;
    let hidden = store.insert_cluster_template(&hidden).await.unwrap();
    let private_other = store
        .insert_cluster_template(&template("other", "p-2"))
        .await
        .unwrap();

    let visible = store
        .list_cluster_templates(
            TemplateScope::VisibleTo("p-1"),
            &page("id", SortDirection::Ascending, 1000, None),
        )
        .await
        .unwrap();
    let uuids: Vec<Uuid> = visible.iter().map(|t| t.uuid).collect();
    assert_eq!(uuids, vec![own.uuid, public.uuid], "{}", engine.name());

    let all = store
        .list_cluster_templates(
            TemplateScope::All,
            &page("id", SortDirection::Ascending, 1000, None),
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 4);

    for (uuid, visible_to_p1) in [
        (own.uuid, true),
        (public.uuid, true),
        (hidden.uuid, false),
        (private_other.uuid, false),
    ] {
        let found = store
            .cluster_template_by_uuid(uuid, TemplateScope::VisibleTo("p-1"))
            .await
            .unwrap();
        assert_eq!(found.is_some(), visible_to_p1, "{}", engine.name());
    }
    assert!(store
        .cluster_template_by_uuid(public.uuid, TemplateScope::OwnedBy("p-1"))
        .await
        .unwrap()
        .is_none());

    let by_name = store
        .cluster_templates_by_name("same", TemplateScope::VisibleTo("p-1"), 2)
        .await
        .unwrap();
    assert_eq!(by_name.len(), 2, "ambiguous names are visible as such");
    let by_name = store
        .cluster_templates_by_name("same", TemplateScope::OwnedBy("p-1"), 2)
        .await
        .unwrap();
    assert_eq!(by_name.len(), 1);
    let exact = store
        .cluster_templates_by_name("SAME", TemplateScope::All, 2)
        .await
        .unwrap();
    assert!(exact.is_empty(), "{}: names compare exactly", engine.name());
    finish(store, database).await;
}

engine_tests!(pagination_with_markers_in_both_directions_and_nulls);
async fn pagination_with_markers_in_both_directions_and_nulls(engine: Engine) {
    let (store, database) = fresh_store(engine).await;
    let mut inserted = Vec::new();
    for (name, size) in [
        ("c", Some(3)),
        ("a", None),
        ("b", Some(1)),
        ("a", Some(2)),
        ("d", None),
    ] {
        let mut t = template(name, "p-1");
        t.docker_volume_size = size;
        inserted.push(store.insert_cluster_template(&t).await.unwrap());
    }
    for (key, direction) in [
        ("id", SortDirection::Ascending),
        ("name", SortDirection::Ascending),
        ("name", SortDirection::Descending),
        ("docker_volume_size", SortDirection::Ascending),
        ("docker_volume_size", SortDirection::Descending),
    ] {
        let whole = store
            .list_cluster_templates(TemplateScope::All, &page(key, direction, 100, None))
            .await
            .unwrap();
        assert_eq!(whole.len(), 5);
        let mut walked = Vec::new();
        let mut marker = None;
        loop {
            let chunk = store
                .list_cluster_templates(TemplateScope::All, &page(key, direction, 2, marker))
                .await
                .unwrap();
            walked.extend(chunk.iter().map(|t| t.uuid));
            if chunk.len() < 2 {
                break;
            }
            marker = chunk.last().map(|t| t.uuid);
        }
        let expected: Vec<Uuid> = whole.iter().map(|t| t.uuid).collect();
        assert_eq!(walked, expected, "{} {key} {direction:?}", engine.name());
    }
    let by_size_ascending = store
        .list_cluster_templates(
            TemplateScope::All,
            &page("docker_volume_size", SortDirection::Ascending, 100, None),
        )
        .await
        .unwrap();
    let sizes: Vec<Option<i64>> = by_size_ascending
        .iter()
        .map(|t| t.docker_volume_size)
        .collect();
    assert_eq!(
        sizes,
        vec![None, None, Some(1), Some(2), Some(3)],
        "{}",
        engine.name()
    );
    let by_name_descending = store
        .list_cluster_templates(
            TemplateScope::All,
            &page("name", SortDirection::Descending, 100, None),
        )
        .await
        .unwrap();
    let names: Vec<&str> = by_name_descending
        .iter()
        .map(|t| t.name.as_deref().unwrap())
        .collect();
    assert_eq!(names, vec!["d", "c", "b", "a", "a"]);
    assert_eq!(
        by_name_descending[3].id, inserted[3].id,
        "ties break on id in the same direction"
    );

    let missing = Uuid::new_v4();
    let error = store
        .list_cluster_templates(
            TemplateScope::All,
            &page("id", SortDirection::Ascending, 2, Some(missing)),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::MarkerNotFound(uuid) if uuid == missing));
    finish(store, database).await;
}

engine_tests!(updates_are_compare_and_set_and_respect_clusters);
async fn updates_are_compare_and_set_and_respect_clusters(engine: Engine) {
    let (store, database) = fresh_store(engine).await;
    let stored = store
        .insert_cluster_template(&template("t", "p-1"))
        .await
        .unwrap();
    let mut renamed = stored.clone();
    renamed.name = Some("renamed".to_owned());
    renamed.updated_at = Some(Timestamp::from_unix_seconds(1_795_425_600));
    let updated = store.update_cluster_template(&renamed, true).await.unwrap();
    assert_eq!(updated.version, stored.version + 1);
    let reloaded = store
        .cluster_template_by_uuid(stored.uuid, TemplateScope::All)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reloaded, updated, "{}", engine.name());

    let stale = store
        .update_cluster_template(&renamed, false)
        .await
        .unwrap_err();
    assert!(
        matches!(stale, StoreError::Conflict),
        "{}: {stale}",
        engine.name()
    );

    insert_cluster_using(&database, stored.uuid).await;
    assert!(store.cluster_template_in_use(stored.uuid).await.unwrap());
    let mut flavor = updated.clone();
    flavor.flavor_id = Some("local.medium".to_owned());
    let in_use = store
        .update_cluster_template(&flavor, true)
        .await
        .unwrap_err();
    assert!(
        matches!(in_use, StoreError::InUse),
        "{}: {in_use}",
        engine.name()
    );
    let untouched = store
        .cluster_template_by_uuid(stored.uuid, TemplateScope::All)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(untouched, updated, "a refused update changes nothing");
    let mut published = updated.clone();
    published.public = true;
    store
        .update_cluster_template(&published, false)
        .await
        .unwrap();

    let refused = store
        .delete_cluster_template(stored.uuid)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::InUse),
        "{}: {refused}",
        engine.name()
    );
    let unused = store
        .insert_cluster_template(&template("unused", "p-1"))
        .await
        .unwrap();
    assert!(!store.cluster_template_in_use(unused.uuid).await.unwrap());
    store.delete_cluster_template(unused.uuid).await.unwrap();
    let gone = store
        .delete_cluster_template(unused.uuid)
        .await
        .unwrap_err();
    assert!(matches!(gone, StoreError::NotFound));
    let missing = store
        .update_cluster_template(&unused, false)
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound));
    finish(store, database).await;
}

engine_tests!(service_heartbeats_count_up);
async fn service_heartbeats_count_up(engine: Engine) {
    let (store, database) = fresh_store(engine).await;
    let start = Timestamp::from_unix_seconds(1_795_425_533);
    store
        .record_service_heartbeat("host-a", "magnum-conductor", start)
        .await
        .unwrap();
    store
        .record_service_heartbeat("host-b", "magnum-conductor", start)
        .await
        .unwrap();
    let later = Timestamp::from_unix_seconds(1_795_425_543);
    store
        .record_service_heartbeat("host-a", "magnum-conductor", later)
        .await
        .unwrap();
    let services = store.list_services().await.unwrap();
    assert_eq!(services.len(), 2, "{}", engine.name());
    assert_eq!(services[0].host, "host-a");
    assert_eq!(services[0].report_count, 2);
    assert_eq!(services[0].last_seen_up, Some(later));
    assert_eq!(services[0].created_at, start);
    assert_eq!(services[1].report_count, 1);
    assert!(services[0].id < services[1].id);
    finish(store, database).await;
}

engine_tests!(every_template_write_and_only_writes_advance_the_generation);
async fn every_template_write_and_only_writes_advance_the_generation(engine: Engine) {
    let (store, database) = fresh_store(engine).await;
    let start = store.cluster_templates_generation().await.unwrap();
    let stored = store
        .insert_cluster_template(&template("g", "p-1"))
        .await
        .unwrap();
    let after_insert = store.cluster_templates_generation().await.unwrap();
    assert!(after_insert > start, "{}", engine.name());
    assert!(store.insert_cluster_template(&stored).await.is_err());
    assert_eq!(
        store.cluster_templates_generation().await.unwrap(),
        after_insert,
        "a refused insert changes nothing"
    );
    let mut renamed = stored.clone();
    renamed.name = Some("h".to_owned());
    let updated = store
        .update_cluster_template(&renamed, false)
        .await
        .unwrap();
    let after_update = store.cluster_templates_generation().await.unwrap();
    assert!(after_update > after_insert);
    assert!(
        store
            .update_cluster_template(&renamed, false)
            .await
            .is_err(),
        "stale version"
    );
    assert_eq!(
        store.cluster_templates_generation().await.unwrap(),
        after_update
    );
    store.delete_cluster_template(updated.uuid).await.unwrap();
    let after_delete = store.cluster_templates_generation().await.unwrap();
    assert!(after_delete > after_update);
    assert!(store.delete_cluster_template(updated.uuid).await.is_err());
    assert_eq!(
        store.cluster_templates_generation().await.unwrap(),
        after_delete
    );
    finish(store, database).await;
}

mod operations {
    use std::collections::HashSet;

    use magnum_domain::operation::{Operation, OperationKind, OperationState};
    use magnum_domain::time::Timestamp;
    use magnum_store::Outcome;
    use uuid::Uuid;

    use super::{finish, fresh_store};
    use magnum_test_support::{engine_tests, Engine};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_seconds(1_795_425_533 + seconds)
    }

    engine_tests!(one_operation_per_cluster_at_a_time_but_deletes_overtake);
    async fn one_operation_per_cluster_at_a_time_but_deletes_overtake(engine: Engine) {
        let (store, database) = fresh_store(engine).await;
        let busy = Uuid::new_v4();
        let other = Uuid::new_v4();
        let enqueue = |cluster, kind, second| {
            let store = store.clone();
            async move {
                store
                    .enqueue_operation(&Operation::new(cluster, kind, "{}".to_owned(), at(second)))
                    .await
                    .unwrap()
            }
        };
        let create = enqueue(busy, OperationKind::CreateCluster, 0).await;
        let scale = enqueue(busy, OperationKind::UpdateCluster, 1).await;
        let elsewhere = enqueue(other, OperationKind::CreateCluster, 2).await;
        let claim = |owner: &'static str| {
            let store = store.clone();
            async move { store.claim_operation(owner, at(3), 30).await.unwrap() }
        };
        assert_eq!(
            claim("a").await.unwrap().uuid,
            create.uuid,
            "{}",
            engine.name()
        );
        // The scale waits for the create; the other cluster's work does not.
        assert_eq!(claim("b").await.unwrap().uuid, elsewhere.uuid);
        assert!(claim("b").await.is_none());
        let delete = enqueue(busy, OperationKind::DeleteCluster, 4).await;
        assert_eq!(
            claim("b").await.unwrap().uuid,
            delete.uuid,
            "deletes overtake"
        );
        // Cancelling ends everything else of the cluster, the running one included.
        let cancelled = store
            .cancel_operations(busy, Some(delete.uuid), "stopped", at(5))
            .await
            .unwrap();
        assert_eq!(cancelled, 2);
        assert!(!store
            .renew_operation_lease(create.uuid, "a", at(40))
            .await
            .unwrap());
        let left = store.unfinished_operations_of(busy).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].uuid, delete.uuid);
        assert_eq!(
            store
                .operation(scale.uuid)
                .await
                .unwrap()
                .unwrap()
                .error
                .as_deref(),
            Some("stopped")
        );
        // A graceful stop hands claims back without counting the attempt.
        assert_eq!(store.release_operations("b").await.unwrap(), 2);
        let again = claim("c").await.unwrap();
        assert_eq!(again.attempts, 1);
        finish(store, database).await;
    }

    engine_tests!(finished_operations_are_pruned_by_age_and_unfinished_ones_never);
    async fn finished_operations_are_pruned_by_age_and_unfinished_ones_never(engine: Engine) {
        let (store, database) = fresh_store(engine).await;
        let cluster = Uuid::new_v4();
        // More old finished operations than one pruning batch holds, so that the batches
        // follow one another.
        let old = magnum_store::PRUNE_BATCH as usize + 20;
        for second in 0..old {
            let operation = Operation::new(
                Uuid::new_v4(),
                OperationKind::CreateCluster,
                "{}".to_owned(),
                at(second as i64),
            );
            store.enqueue_operation(&operation).await.unwrap();
            let claimed = store
                .claim_operation("a", at(second as i64), 30)
                .await
                .unwrap()
                .unwrap();
            let outcome = if second % 2 == 0 {
                Outcome::Succeeded
            } else {
                Outcome::Failed {
                    reason: "no room".to_owned(),
                }
            };
            assert!(store
                .finish_operation(claimed.uuid, "a", outcome, at(second as i64))
                .await
                .unwrap());
        }
        // Old but unfinished: one whose conductor holds it (a long lease) and a pending one.
        let held = store
            .enqueue_operation(&Operation::new(
                Uuid::new_v4(),
                OperationKind::DeleteCluster,
                "{}".to_owned(),
                at(1),
            ))
            .await
            .unwrap();
        let claimed = store
            .claim_operation("b", at(2), 100_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.uuid, held.uuid, "{}", engine.name());
        // Finished after the bound: kept.
        let recent = store
            .enqueue_operation(&Operation::new(
                Uuid::new_v4(),
                OperationKind::CreateCluster,
                "{}".to_owned(),
                at(5_000),
            ))
            .await
            .unwrap();
        let claimed = store
            .claim_operation("c", at(5_000), 30)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.uuid, recent.uuid);
        assert!(store
            .finish_operation(recent.uuid, "c", Outcome::Succeeded, at(5_000))
            .await
            .unwrap());
        let waiting = store
            .enqueue_operation(&Operation::new(
                cluster,
                OperationKind::ResizeCluster,
                "{}".to_owned(),
                at(0),
            ))
            .await
            .unwrap();

        let removed = store.prune_finished_operations(at(4_000)).await.unwrap();
        assert_eq!(removed, old as u64, "{}", engine.name());
        assert_eq!(
            store.prune_finished_operations(at(4_000)).await.unwrap(),
            0,
            "pruning again removes nothing"
        );
        assert!(store.operation(recent.uuid).await.unwrap().is_some());
        let unfinished: HashSet<Uuid> = store
            .unfinished_operations()
            .await
            .unwrap()
            .iter()
            .map(|operation| operation.uuid)
            .collect();
        assert_eq!(unfinished, HashSet::from([waiting.uuid, held.uuid]));
        // The queue works on after pruning: the held one is still its holder's.
        assert!(store
            .renew_operation_lease(held.uuid, "b", at(10))
            .await
            .unwrap());
        finish(store, database).await;
    }

    engine_tests!(a_clusters_recent_operations_come_newest_first_and_bounded);
    /// What the autoscaler's history is read from: a cluster's newest operations, finished
    /// or not, newest first, at most as many as asked, and only that cluster's.
    async fn a_clusters_recent_operations_come_newest_first_and_bounded(engine: Engine) {
        let (store, database) = fresh_store(engine).await;
        let (cluster, other) = (Uuid::new_v4(), Uuid::new_v4());
        let mut queued = Vec::new();
        for (second, kind) in [
            OperationKind::CreateCluster,
            OperationKind::ResizeCluster,
            OperationKind::AutoscaleCluster,
            OperationKind::ReplaceNodes,
        ]
        .into_iter()
        .enumerate()
        {
            let operation = Operation::new(cluster, kind, "{}".to_owned(), at(second as i64));
            queued.push(store.enqueue_operation(&operation).await.unwrap());
            store
                .enqueue_operation(&Operation::new(
                    other,
                    OperationKind::UpdateCluster,
                    "{}".to_owned(),
                    at(second as i64),
                ))
                .await
                .unwrap();
        }
        // The oldest finished: it is still listed, with how it ended.
        let claimed = store
            .claim_operation("c", at(5), 30)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.uuid, queued[0].uuid);
        assert!(store
            .finish_operation(claimed.uuid, "c", Outcome::Succeeded, at(6))
            .await
            .unwrap());
        let recent = store.recent_operations_of(cluster, 3).await.unwrap();
        let kinds: Vec<OperationKind> = recent.iter().map(|operation| operation.kind).collect();
        assert_eq!(
            kinds,
            [
                OperationKind::ReplaceNodes,
                OperationKind::AutoscaleCluster,
                OperationKind::ResizeCluster
            ],
            "{}",
            engine.name()
        );
        let all = store.recent_operations_of(cluster, 50).await.unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[3].state, OperationState::Succeeded);
        assert_eq!(all[3].updated_at, Some(at(6)));
        assert!(store
            .recent_operations_of(cluster, 0)
            .await
            .unwrap()
            .is_empty());
        assert!(store
            .recent_operations_of(Uuid::new_v4(), 50)
            .await
            .unwrap()
            .is_empty());
        // One kind since a time, whatever came after it.
        let replacements = |since, limit| {
            let store = store.clone();
            async move {
                store
                    .operations_of_kind_since(
                        cluster,
                        OperationKind::ReplaceNodes,
                        at(since),
                        limit,
                    )
                    .await
                    .unwrap()
            }
        };
        let found = replacements(2, 10).await;
        assert_eq!(found.len(), 1, "{}", engine.name());
        assert_eq!(found[0].uuid, queued[3].uuid);
        assert!(
            replacements(3, 10).await.is_empty(),
            "created after, not at"
        );
        assert!(replacements(0, 0).await.is_empty());
        finish(store, database).await;
    }

    engine_tests!(claims_are_exclusive_leased_and_taken_over_after_expiry);
    async fn claims_are_exclusive_leased_and_taken_over_after_expiry(engine: Engine) {
        let (store, database) = fresh_store(engine).await;
        assert!(store
            .claim_operation("c1", at(0), 30)
            .await
            .unwrap()
            .is_none());
        let cluster = Uuid::new_v4();
        let first = store
            .enqueue_operation(&Operation::new(
                cluster,
                OperationKind::CreateCluster,
                "{\"node_count\": 2}".to_owned(),
                at(0),
            ))
            .await
            .unwrap();
        let second = store
            .enqueue_operation(&Operation::new(
                cluster,
                OperationKind::DeleteCluster,
                "{}".to_owned(),
                at(1),
            ))
            .await
            .unwrap();
        assert_eq!(first.state, OperationState::Pending);

        let claimed = store
            .claim_operation("c1", at(2), 30)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.uuid, first.uuid, "{}: oldest first", engine.name());
        assert_eq!(claimed.state, OperationState::Running);
        assert_eq!(claimed.attempts, 1);
        assert_eq!(claimed.lease_owner.as_deref(), Some("c1"));
        assert_eq!(claimed.lease_until, Some(at(32)));
        assert_eq!(claimed.payload, "{\"node_count\": 2}");

        let next = store
            .claim_operation("c2", at(3), 30)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next.uuid, second.uuid, "a held lease is not taken");
        assert!(store
            .claim_operation("c2", at(4), 30)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .finish_operation(second.uuid, "c2", Outcome::Succeeded, at(5))
            .await
            .unwrap());

        assert!(store
            .renew_operation_lease(first.uuid, "c1", at(60))
            .await
            .unwrap());
        assert!(
            !store
                .renew_operation_lease(first.uuid, "c2", at(90))
                .await
                .unwrap(),
            "only the holder renews"
        );
        assert!(
            store
                .claim_operation("c2", at(40), 30)
                .await
                .unwrap()
                .is_none(),
            "renewed until 60"
        );

        // c1 dies: once its lease has run out, c2 takes the operation over.
        let taken_over = store
            .claim_operation("c2", at(61), 30)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(taken_over.uuid, first.uuid);
        assert_eq!(taken_over.attempts, 2);
        assert!(
            !store
                .finish_operation(first.uuid, "c1", Outcome::Succeeded, at(62))
                .await
                .unwrap(),
            "the old holder cannot finish it"
        );
        assert!(store
            .finish_operation(
                first.uuid,
                "c2",
                Outcome::Failed {
                    reason: "node image missing".to_owned()
                },
                at(63)
            )
            .await
            .unwrap());
        let failed = store.operation(first.uuid).await.unwrap().unwrap();
        assert_eq!(
            (failed.state, failed.error.as_deref(), failed.lease_owner),
            (OperationState::Failed, Some("node image missing"), None)
        );
        assert_eq!(
            store.operation(second.uuid).await.unwrap().unwrap().state,
            OperationState::Succeeded
        );
        assert!(store.unfinished_operations().await.unwrap().is_empty());
        assert!(
            store
                .claim_operation("c3", at(1000), 30)
                .await
                .unwrap()
                .is_none(),
            "finished operations stay finished"
        );
        finish(store, database).await;
    }

    engine_tests!(concurrent_claimers_never_share_an_operation, multi_thread);
    async fn concurrent_claimers_never_share_an_operation(engine: Engine) {
        let (store, database) = fresh_store(engine).await;
        let total = 40;
        for index in 0..total {
            store
                .enqueue_operation(&Operation::new(
                    Uuid::new_v4(),
                    OperationKind::UpdateCluster,
                    "{}".to_owned(),
                    at(index),
                ))
                .await
                .unwrap();
        }
        let mut claimers = Vec::new();
        for claimer in 0..6 {
            let store = store.clone();
            claimers.push(tokio::spawn(async move {
                let owner = format!("conductor-{claimer}");
                let mut mine = Vec::new();
                while let Some(operation) =
                    store.claim_operation(&owner, at(100), 300).await.unwrap()
                {
                    mine.push(operation.uuid);
                }
                mine
            }));
        }
        let mut seen = HashSet::new();
        let mut count = 0;
        for claimer in claimers {
            for uuid in claimer.await.unwrap() {
                count += 1;
                assert!(seen.insert(uuid), "{}: {uuid} claimed twice", engine.name());
            }
        }
        assert_eq!(
            count,
            total as usize,
            "{}: every operation claimed once",
            engine.name()
        );
        finish(store, database).await;
    }
}

mod clusters {
    use magnum_domain::cluster::{
        Cluster, ClusterStatus, HealthStatus, NodeGroup, Taint, DEFAULT_MASTER_NODEGROUP,
        DEFAULT_WORKER_NODEGROUP,
    };
    use magnum_domain::labels::Labels;
    use magnum_domain::operation::{Operation, OperationKind};
    use magnum_domain::time::Timestamp;
    use magnum_store::StoreError;
    use serde_json::json;
    use uuid::Uuid;

    use super::{finish, fresh_store, template};
    use magnum_test_support::{engine_tests, Engine};

    fn now() -> Timestamp {
        Timestamp::from_unix_seconds(1_795_425_533)
    }

    fn cluster(template_uuid: Uuid, name: &str) -> Cluster {
        Cluster {
            id: 0,
            uuid: Uuid::new_v4(),
            name: Some(name.to_owned()),
            project_id: "p-1".to_owned(),
            user_id: "u-1".to_owned(),
            cluster_template_id: template_uuid,
            keypair: None,
            docker_volume_size: Some(5),
            labels: Labels::from_patch_string("{'a': 'b'}").unwrap(),
            master_flavor_id: Some("local.small".to_owned()),
            flavor_id: Some("local.small".to_owned()),
            create_timeout: Some(60),
            discovery_url: None,
            fixed_network: None,
            fixed_subnet: None,
            floating_ip_enabled: true,
            master_lb_enabled: false,
            status: ClusterStatus::CreateInProgress,
            status_reason: None,
            health_status: Some(HealthStatus::Unknown),
            health_status_reason: json!({"api": "ok", "node-0.Ready": "True"})
                .as_object()
                .unwrap()
                .clone(),
            stack_id: None,
            api_address: None,
            coe_version: None,
            container_version: None,
            node_count: 0,
            master_count: 0,
            node_addresses: Vec::new(),
            master_addresses: Vec::new(),
            created_at: now(),
            updated_at: None,
            version: 0,
        }
    }

    fn nodegroup(cluster: &Cluster, name: &str, role: &str, count: i64) -> NodeGroup {
        NodeGroup {
            id: 0,
            uuid: Uuid::new_v4(),
            cluster_uuid: cluster.uuid,
            project_id: cluster.project_id.clone(),
            name: name.to_owned(),
            docker_volume_size: cluster.docker_volume_size,
            labels: cluster.labels.clone(),
            flavor_id: cluster.flavor_id.clone(),
            image_id: Some("local-node".to_owned()),
            node_addresses: vec!["10.77.0.11".to_owned()],
            node_count: count,
            role: role.to_owned(),
            min_node_count: 0,
            max_node_count: None,
            is_default: true,
            stack_id: None,
            status: ClusterStatus::CreateInProgress,
            status_reason: None,
            coe_version: None,
            node_labels: json!({"tier": "web"}).as_object().unwrap().clone(),
            node_taints: vec![Taint {
                key: "k".to_owned(),
                value: None,
                effect: "NoSchedule".to_owned(),
            }],
            created_at: now(),
            updated_at: None,
            version: 0,
        }
    }

    /// A cluster with a master, stored with its create operation.
    async fn stored_cluster(store: &magnum_store::Store, template: Uuid, name: &str) -> Uuid {
        let wanted = cluster(template, name);
        let groups = [nodegroup(&wanted, DEFAULT_MASTER_NODEGROUP, "master", 1)];
        let build = Operation::new(
            wanted.uuid,
            OperationKind::CreateCluster,
            "{}".to_owned(),
            now(),
        );
        store
            .create_cluster(&wanted, &groups, &build, None)
            .await
            .unwrap();
        wanted.uuid
    }

    async fn note(store: &magnum_store::Store, uuid: Uuid, message: String) {
        use magnum_domain::event::{Cause, ClusterEvent};
        store
            .modify_cluster(
                uuid,
                &Cause::none(),
                |aggregate| -> Result<(), StoreError> {
                    aggregate.record(ClusterEvent::normal("NodeStarted", message.clone()));
                    Ok(())
                },
            )
            .await
            .unwrap();
    }

    engine_tests!(
        events_are_read_in_commit_order_while_written_concurrently,
        multi_thread
    );
    async fn events_are_read_in_commit_order_while_written_concurrently(engine: Engine) {
        use magnum_store::EventScope;
        let (store, database) = fresh_store(engine).await;
        let template = store
            .insert_cluster_template(&template("t", "p-1"))
            .await
            .unwrap();
        let mut clusters = Vec::new();
        for index in 0..4 {
            clusters.push(stored_cluster(&store, template.uuid, &format!("c{index}")).await);
        }
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // A reader that only ever asks for what follows the last sequence it saw: if any
        // event committed with a lower sequence after it read, it would be lost to it.
        let reader = {
            let (store, done) = (store.clone(), done.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut last = 0;
                loop {
                    let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                    let batch = store
                        .events_after(&EventScope::All, Some(last), 1000)
                        .await
                        .unwrap();
                    for event in batch {
                        assert!(event.sequence > last);
                        last = event.sequence;
                        seen.push(event.uuid);
                    }
                    if finished {
                        return seen;
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        let mut writers = Vec::new();
        for (index, uuid) in clusters.iter().copied().enumerate() {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                for step in 0..12 {
                    let message = format!("writer {index} step {step}");
                    // Half through a change of the cluster, half appended alone.
                    if index % 2 == 0 {
                        note(&store, uuid, message).await;
                    } else {
                        let event =
                            magnum_domain::event::ClusterEvent::normal("NodeStarted", message);
                        store
                            .append_events(uuid, &[event], &magnum_domain::event::Cause::none())
                            .await
                            .unwrap();
                    }
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen = reader.await.unwrap();
        let all = store
            .events_after(&EventScope::All, None, 1000)
            .await
            .unwrap();
        assert_eq!(all.len(), 4 + 4 * 12, "{}", engine.name());
        assert_eq!(
            seen,
            all.iter().map(|event| event.uuid).collect::<Vec<_>>(),
            "{}: the follower saw every event once, in order",
            engine.name()
        );
        // Each cluster's own events, in its order, with the snapshot of its state.
        let first = store
            .events_after(&EventScope::Cluster(clusters[0]), None, 1000)
            .await
            .unwrap();
        assert_eq!(first.len(), 13);
        assert_eq!(first[0].event.reason, "CreateStarted");
        assert_eq!(first[0].snapshot.status, ClusterStatus::CreateInProgress);
        assert_eq!(first[12].event.message, "writer 0 step 11");
        let project = store
            .events_before(&EventScope::Project("p-2".to_owned()), None, 10)
            .await
            .unwrap();
        assert!(project.is_empty());
        finish(store, database).await;
    }

    engine_tests!(
        a_changes_events_are_stored_with_it_once_or_not_at_all,
        multi_thread
    );
    async fn a_changes_events_are_stored_with_it_once_or_not_at_all(engine: Engine) {
        use magnum_domain::event::{Cause, ClusterEvent};
        use magnum_store::EventScope;
        let (store, database) = fresh_store(engine).await;
        let template = store
            .insert_cluster_template(&template("t", "p-1"))
            .await
            .unwrap();
        let uuid = stored_cluster(&store, template.uuid, "c").await;
        let events_of = |store: magnum_store::Store| async move {
            store
                .events_after(&EventScope::Cluster(uuid), None, 1000)
                .await
                .unwrap()
        };
        let before = events_of(store.clone()).await;

        // A decision that records an event and then refuses stores neither.
        let refused = store
            .modify_cluster(
                uuid,
                &Cause::none(),
                |aggregate| -> Result<(), StoreError> {
                    aggregate.cluster.status_reason = Some("never".to_owned());
                    aggregate.record(ClusterEvent::normal("NodeStarted", "never".to_owned()));
                    Err(StoreError::Busy)
                },
            )
            .await;
        assert!(refused.is_err());
        // A change the database refuses (a second nodegroup under an existing name) takes
        // its events with it.
        let duplicate = store
            .modify_cluster(
                uuid,
                &Cause::none(),
                |aggregate| -> Result<(), StoreError> {
                    let twin = NodeGroup {
                        id: 0,
                        uuid: Uuid::new_v4(),
                        ..aggregate.nodegroups[0].clone()
                    };
                    aggregate.nodegroups.push(twin);
                    aggregate.record(ClusterEvent::normal("NodeStarted", "never".to_owned()));
                    Ok(())
                },
            )
            .await;
        assert!(duplicate.is_err(), "{}", engine.name());
        let after = events_of(store.clone()).await;
        assert_eq!(
            after.iter().map(|event| event.uuid).collect::<Vec<_>>(),
            before.iter().map(|event| event.uuid).collect::<Vec<_>>(),
            "{}: refused changes leave no event",
            engine.name()
        );
        let cluster = store.cluster_by_uuid(uuid).await.unwrap().unwrap();
        assert_eq!(cluster.status_reason, None);

        // Writers racing on one cluster: a change retried after a conflict is decided again
        // from what is stored, so each committed change's event is there exactly once.
        let mut writers = Vec::new();
        for writer in 0..4 {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                for step in 0..6 {
                    let message = format!("writer {writer} step {step}");
                    store
                        .modify_cluster(
                            uuid,
                            &Cause::none(),
                            |aggregate| -> Result<(), StoreError> {
                                aggregate.cluster.status_reason = Some(message.clone());
                                aggregate
                                    .record(ClusterEvent::normal("NodeStarted", message.clone()));
                                Ok(())
                            },
                        )
                        .await
                        .unwrap();
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
        let raced: Vec<String> = events_of(store.clone())
            .await
            .into_iter()
            .filter(|event| event.event.reason == "NodeStarted")
            .map(|event| event.event.message)
            .collect();
        let mut expected: Vec<String> = (0..4)
            .flat_map(|writer| (0..6).map(move |step| format!("writer {writer} step {step}")))
            .collect();
        let mut sorted = raced.clone();
        sorted.sort();
        expected.sort();
        assert_eq!(
            sorted,
            expected,
            "{}: each change's event once",
            engine.name()
        );
        let cluster = store.cluster_by_uuid(uuid).await.unwrap().unwrap();
        assert_eq!(
            cluster.status_reason.as_deref(),
            raced.last().map(String::as_str),
            "{}: the last event told is the last change committed",
            engine.name()
        );
        finish(store, database).await;
    }

    engine_tests!(only_clusters_whose_deletion_is_recorded_count_as_deleted);
    async fn only_clusters_whose_deletion_is_recorded_count_as_deleted(engine: Engine) {
        use magnum_domain::event::Cause;
        let (store, database) = fresh_store(engine).await;
        let template = store
            .insert_cluster_template(&template("t", "p-1"))
            .await
            .unwrap();
        let live = stored_cluster(&store, template.uuid, "live").await;
        let gone = stored_cluster(&store, template.uuid, "gone").await;
        assert!(store.purge_cluster(gone, &Cause::none()).await.unwrap());
        // Never known here: another database's cluster, or one made after a restored backup.
        let unknown = Uuid::new_v4();
        let deleted = store
            .deleted_clusters_among(&[live, gone, unknown])
            .await
            .unwrap();
        assert_eq!(deleted, vec![gone], "{}", engine.name());
        assert!(store.deleted_clusters_among(&[]).await.unwrap().is_empty());
        finish(store, database).await;
    }

    engine_tests!(events_are_kept_within_their_count_age_and_deletion_bounds);
    async fn events_are_kept_within_their_count_age_and_deletion_bounds(engine: Engine) {
        use magnum_domain::event::Cause;
        use magnum_store::{EventRetention, EventScope};
        let (store, database) = fresh_store(engine).await;
        let template = store
            .insert_cluster_template(&template("t", "p-1"))
            .await
            .unwrap();
        let busy = stored_cluster(&store, template.uuid, "busy").await;
        let gone = stored_cluster(&store, template.uuid, "gone").await;
        for step in 0..29 {
            note(&store, busy, format!("step {step}")).await;
        }
        let count = |scope| {
            let store = store.clone();
            async move { store.events_after(&scope, None, 1000).await.unwrap() }
        };
        let retention = EventRetention {
            max_per_cluster: 10,
            max_age: 30 * 86_400,
            keep_after_delete: 3_600,
        };
        // Only clusters with events after the given position are counted again.
        let newest = store.latest_event_sequence().await.unwrap();
        assert_eq!(
            store
                .prune_events(retention, newest, Timestamp::now())
                .await
                .unwrap(),
            0
        );
        let pruned_through = |scope| {
            let store = store.clone();
            async move { store.events_pruned_through(&scope).await.unwrap() }
        };
        assert_eq!(pruned_through(EventScope::Cluster(busy)).await, 0);
        let before = count(EventScope::Cluster(busy)).await;
        let removed = store
            .prune_events(retention, 0, Timestamp::now())
            .await
            .unwrap();
        assert_eq!(removed, 20, "{}", engine.name());
        let kept = count(EventScope::Cluster(busy)).await;
        assert_eq!(kept.len(), 10);
        assert_eq!(kept[0].event.message, "step 19", "the newest are kept");
        // How far each cluster was pruned is kept: a reader resuming below it missed events.
        let last_dropped = before[19].sequence;
        assert_eq!(
            pruned_through(EventScope::Cluster(busy)).await,
            last_dropped
        );
        assert_eq!(
            pruned_through(EventScope::Project("p-1".to_owned())).await,
            last_dropped
        );
        assert_eq!(pruned_through(EventScope::All).await, last_dropped);
        assert_eq!(pruned_through(EventScope::Cluster(gone)).await, 0);
        assert_eq!(
            pruned_through(EventScope::Project("p-2".to_owned())).await,
            0
        );
        // Marked again with nothing dropped: the mark stays where it was.
        store
            .prune_events(retention, 0, Timestamp::now())
            .await
            .unwrap();
        assert_eq!(
            pruned_through(EventScope::Cluster(busy)).await,
            last_dropped
        );
        // A deleted cluster's events stay readable, with its deletion, for a while.
        assert!(store
            .purge_cluster(gone, &Cause::request("req-1"))
            .await
            .unwrap());
        let told = count(EventScope::Cluster(gone)).await;
        assert_eq!(told.last().unwrap().event.reason, "Deleted");
        assert_eq!(
            told.last().unwrap().cause.request_id.as_deref(),
            Some("req-1")
        );
        assert_eq!(
            told.last().unwrap().snapshot.status,
            ClusterStatus::DeleteComplete
        );
        let soon = Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() + 3_000);
        store.prune_events(retention, 0, soon).await.unwrap();
        assert_eq!(count(EventScope::Cluster(gone)).await.len(), 2);
        let gone_events = count(EventScope::Cluster(gone)).await;
        let later = Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() + 3_700);
        store.prune_events(retention, 0, later).await.unwrap();
        assert!(count(EventScope::Cluster(gone)).await.is_empty());
        assert_eq!(count(EventScope::Cluster(busy)).await.len(), 10);
        assert_eq!(
            pruned_through(EventScope::Cluster(gone)).await,
            gone_events.last().unwrap().sequence
        );
        // And nothing outlives its age; the mark of a cluster with no event left goes once
        // it is older than the age bound.
        let busy_newest = count(EventScope::Cluster(busy))
            .await
            .last()
            .unwrap()
            .sequence;
        let far = Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() + 31 * 86_400);
        store.prune_events(retention, 0, far).await.unwrap();
        assert!(count(EventScope::All).await.is_empty());
        assert_eq!(pruned_through(EventScope::Cluster(busy)).await, busy_newest);
        assert_eq!(pruned_through(EventScope::Cluster(gone)).await, 0);
        finish(store, database).await;
    }

    engine_tests!(
        concurrent_creates_never_exceed_the_cluster_limit,
        multi_thread
    );
    async fn concurrent_creates_never_exceed_the_cluster_limit(engine: Engine) {
        let (store, database) = fresh_store(engine).await;
        let template = store
            .insert_cluster_template(&template("t", "p-1"))
            .await
            .unwrap();
        let mut attempts = Vec::new();
        for index in 0..12 {
            let store = store.clone();
            let wanted = cluster(template.uuid, &format!("c{index}"));
            attempts.push(tokio::spawn(async move {
                let build = Operation::new(
                    wanted.uuid,
                    OperationKind::CreateCluster,
                    "{}".to_owned(),
                    now(),
                );
                store.create_cluster(&wanted, &[], &build, Some(3)).await
            }));
        }
        let mut created = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(_) => created += 1,
                Err(StoreError::LimitReached { limit: 3 }) => {}
                Err(other) => panic!("{}: {other}", engine.name()),
            }
        }
        assert_eq!(created, 3, "{}", engine.name());
        store.close().await;
        database.drop_database().await;
    }

    engine_tests!(clusters_are_created_with_their_nodegroups_and_operation_or_not_at_all);
    async fn clusters_are_created_with_their_nodegroups_and_operation_or_not_at_all(
        engine: Engine,
    ) {
        let (store, database) = fresh_store(engine).await;
        let template = store
            .insert_cluster_template(&template("t", "p-1"))
            .await
            .unwrap();
        let wanted = cluster(template.uuid, "c1");
        let groups = [
            nodegroup(&wanted, DEFAULT_MASTER_NODEGROUP, "master", 1),
            nodegroup(&wanted, DEFAULT_WORKER_NODEGROUP, "worker", 2),
        ];
        let build = Operation::new(
            wanted.uuid,
            OperationKind::CreateCluster,
            "{}".to_owned(),
            now(),
        );
        let stored = store
            .create_cluster(&wanted, &groups, &build, None)
            .await
            .unwrap();
        let mut summarized = wanted.clone();
        summarized.summarize(&groups);
        assert_eq!(
            stored,
            Cluster {
                id: stored.id,
                version: 1,
                ..summarized
            },
            "{}",
            engine.name()
        );
        let loaded = store.nodegroups_of_cluster(wanted.uuid).await.unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0].name, DEFAULT_MASTER_NODEGROUP);
        assert_eq!(
            loaded[1],
            NodeGroup {
                id: loaded[1].id,
                version: 1,
                ..groups[1].clone()
            }
        );
        assert!(loaded[0].id < loaded[1].id);
        assert_eq!(
            store.unfinished_operations().await.unwrap()[0].uuid,
            build.uuid
        );
        assert!(store.cluster_template_in_use(template.uuid).await.unwrap());
        assert_eq!(store.count_clusters("p-1").await.unwrap(), 1);
        assert_eq!(
            store
                .clusters_by_name("c1", Some("p-1"), 2)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(store
            .clusters_by_name("c1", Some("p-2"), 2)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.clusters_by_name("c1", None, 2).await.unwrap().len(),
            1
        );

        let duplicate = store
            .create_cluster(
                &wanted,
                &[],
                &Operation::new(
                    wanted.uuid,
                    OperationKind::CreateCluster,
                    "{}".to_owned(),
                    now(),
                ),
                None,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(duplicate, StoreError::DuplicateUuid(_)),
            "{}: {duplicate}",
            engine.name()
        );

        let orphan = cluster(Uuid::new_v4(), "orphan");
        let orphan_groups = [nodegroup(&orphan, DEFAULT_MASTER_NODEGROUP, "master", 1)];
        let error = store
            .create_cluster(
                &orphan,
                &orphan_groups,
                &Operation::new(
                    orphan.uuid,
                    OperationKind::CreateCluster,
                    "{}".to_owned(),
                    now(),
                ),
                None,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::NotFound),
            "{}: {error}",
            engine.name()
        );
        assert!(store.cluster_by_uuid(orphan.uuid).await.unwrap().is_none());
        assert!(store
            .nodegroups_of_cluster(orphan.uuid)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.unfinished_operations().await.unwrap().len(),
            1,
            "nothing of a refused create is kept"
        );
        finish(store, database).await;
    }

    engine_tests!(delegated_credentials_come_with_their_cluster_and_go_with_it);
    async fn delegated_credentials_come_with_their_cluster_and_go_with_it(engine: Engine) {
        use magnum_store::StoredCredential;
        let (store, database) = fresh_store(engine).await;
        let template = store
            .insert_cluster_template(&template("t", "p-1"))
            .await
            .unwrap();
        let wanted = cluster(template.uuid, "c1");
        let credential = |cluster: Uuid, id: &str| StoredCredential {
            cluster_uuid: cluster,
            credential_id: id.to_owned(),
            user_id: "u-1".to_owned(),
            sealed_secret: Some(format!("sealed-{id}")),
            created_at: now(),
            revoke_after: None,
        };
        let build = |cluster: Uuid| {
            Operation::new(
                cluster,
                OperationKind::CreateCluster,
                "{}".to_owned(),
                now(),
            )
        };
        // A create refused (here: its template is gone) keeps no credential either.
        let orphan = cluster(Uuid::new_v4(), "orphan");
        assert!(store
            .create_cluster_with_credential(
                &orphan,
                &[],
                &build(orphan.uuid),
                None,
                Some(&credential(orphan.uuid, "c0")),
                &magnum_domain::event::Cause::none(),
            )
            .await
            .is_err());
        assert!(store
            .cluster_credentials(orphan.uuid)
            .await
            .unwrap()
            .is_empty());
        store
            .create_cluster_with_credential(
                &wanted,
                &[],
                &build(wanted.uuid),
                None,
                Some(&credential(wanted.uuid, "c1")),
                &magnum_domain::event::Cause::none(),
            )
            .await
            .unwrap();
        store
            .add_cluster_credential(&credential(wanted.uuid, "c2"))
            .await
            .unwrap();
        let ids = |list: Vec<StoredCredential>| -> Vec<String> {
            list.into_iter().map(|c| c.credential_id).collect()
        };
        let listed = store.cluster_credentials(wanted.uuid).await.unwrap();
        assert_eq!(
            listed[0],
            credential(wanted.uuid, "c1"),
            "{}",
            engine.name()
        );
        assert_eq!(ids(listed), ["c1", "c2"], "oldest first");
        store
            .remove_cluster_credential(wanted.uuid, "c1")
            .await
            .unwrap();
        assert_eq!(
            ids(store.cluster_credentials(wanted.uuid).await.unwrap()),
            ["c2"]
        );
        // Replaced ones are revoked after their grace; none is due before.
        store
            .add_cluster_credential(&credential(wanted.uuid, "c3"))
            .await
            .unwrap();
        let at = |seconds| Timestamp::from_unix_seconds(now().unix_seconds() + seconds);
        store
            .schedule_credential_revocation(wanted.uuid, Some("c3"), at(100))
            .await
            .unwrap();
        assert!(store
            .credentials_due_for_revocation(at(99), 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            ids(store
                .credentials_due_for_revocation(at(100), 10)
                .await
                .unwrap()),
            ["c2"]
        );
        // A schedule is never pushed back by a later one.
        store
            .schedule_credential_revocation(wanted.uuid, Some("c3"), at(500))
            .await
            .unwrap();
        assert_eq!(
            ids(store
                .credentials_due_for_revocation(at(100), 10)
                .await
                .unwrap()),
            ["c2"]
        );
        // None for a cluster that is gone; a purged cluster's credentials stay recorded and
        // are due at once (unless scheduled later, as a force delete does).
        let gone = store
            .add_cluster_credential(&credential(Uuid::new_v4(), "c4"))
            .await
            .unwrap_err();
        assert!(matches!(gone, StoreError::NotFound), "{gone}");
        assert!(store
            .purge_cluster(wanted.uuid, &magnum_domain::event::Cause::none())
            .await
            .unwrap());
        assert_eq!(
            ids(store
                .credentials_due_for_revocation(at(0), 10)
                .await
                .unwrap()),
            ["c3"]
        );
        store
            .schedule_credential_revocation(wanted.uuid, None, at(1000))
            .await
            .unwrap();
        assert_eq!(
            ids(store
                .credentials_due_for_revocation(at(999), 10)
                .await
                .unwrap()),
            ["c2"]
        );
        // Credentials Keystone keeps refusing to revoke go after the others.
        store
            .record_revocation_failure(wanted.uuid, "c2")
            .await
            .unwrap();
        assert_eq!(
            ids(store
                .credentials_due_for_revocation(at(2000), 10)
                .await
                .unwrap()),
            ["c3", "c2"]
        );
        assert_eq!(
            ids(store
                .credentials_due_for_revocation(at(2000), 1)
                .await
                .unwrap()),
            ["c3"]
        );
        for id in ["c2", "c3"] {
            store
                .remove_cluster_credential(wanted.uuid, id)
                .await
                .unwrap();
        }
        assert!(store
            .cluster_credentials(wanted.uuid)
            .await
            .unwrap()
            .is_empty());
        // A force delete schedules the revocation in the purge's own transaction.
        let forced = cluster(template.uuid, "forced");
        store
            .create_cluster_with_credential(
                &forced,
                &[],
                &build(forced.uuid),
                None,
                Some(&credential(forced.uuid, "f1")),
                &magnum_domain::event::Cause::none(),
            )
            .await
            .unwrap();
        assert!(store
            .purge_cluster_revoking_after(
                forced.uuid,
                Some(at(5000)),
                &magnum_domain::event::Cause::none()
            )
            .await
            .unwrap());
        assert!(store
            .credentials_due_for_revocation(at(4999), 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            ids(store
                .credentials_due_for_revocation(at(5000), 10)
                .await
                .unwrap()),
            ["f1"]
        );
        finish(store, database).await;
    }

    engine_tests!(status_changes_are_compare_and_set);
    async fn status_changes_are_compare_and_set(engine: Engine) {
        let (store, database) = fresh_store(engine).await;
        let template = store
            .insert_cluster_template(&template("t", "p-1"))
            .await
            .unwrap();
        let wanted = cluster(template.uuid, "c1");
        let stored = store
            .create_cluster(
                &wanted,
                &[],
                &Operation::new(
                    wanted.uuid,
                    OperationKind::CreateCluster,
                    "{}".to_owned(),
                    now(),
                ),
                None,
            )
            .await
            .unwrap();
        let next = stored
            .status
            .apply(magnum_domain::cluster::StatusEvent::CreateSucceeded)
            .unwrap();
        let later = Timestamp::from_unix_seconds(now().unix_seconds() + 5);
        let updated = store
            .set_cluster_status(
                stored.uuid,
                stored.version,
                next,
                Some("Cluster created: 1 master, 2 workers ready"),
                later,
            )
            .await
            .unwrap();
        assert_eq!(
            updated.status,
            ClusterStatus::CreateComplete,
            "{}",
            engine.name()
        );
        assert_eq!(
            updated.status_reason.as_deref(),
            Some("Cluster created: 1 master, 2 workers ready")
        );
        assert_eq!(updated.version, stored.version + 1);
        assert_eq!(updated.updated_at, Some(later));
        let stale = store
            .set_cluster_status(
                stored.uuid,
                stored.version,
                ClusterStatus::CreateFailed,
                None,
                later,
            )
            .await
            .unwrap_err();
        assert!(matches!(stale, StoreError::Conflict));
        assert_eq!(
            store
                .cluster_by_uuid(stored.uuid)
                .await
                .unwrap()
                .unwrap()
                .status,
            ClusterStatus::CreateComplete
        );
        let missing = store
            .set_cluster_status(Uuid::new_v4(), 1, ClusterStatus::CreateFailed, None, later)
            .await
            .unwrap_err();
        assert!(matches!(missing, StoreError::NotFound));
        finish(store, database).await;
    }
}

mod monitors {
    use std::collections::HashSet;

    use magnum_domain::time::Timestamp;
    use uuid::Uuid;

    use super::{finish, fresh_store};
    use magnum_test_support::{engine_tests, Engine};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_seconds(1_795_425_533 + seconds)
    }

    fn sorted(mut clusters: Vec<Uuid>) -> Vec<Uuid> {
        clusters.sort_unstable();
        clusters
    }

    engine_tests!(monitor_leases_are_exclusive_renewed_handed_back_and_taken_over);
    async fn monitor_leases_are_exclusive_renewed_handed_back_and_taken_over(engine: Engine) {
        let (store, database) = fresh_store(engine).await;
        let name = engine.name();
        let (x, y, z) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let claim = |owner: &'static str, clusters: Vec<Uuid>, second: i64| {
            let store = store.clone();
            async move {
                store
                    .claim_monitors(owner, &clusters, at(second), 10)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            claim("a", vec![x, y], 0).await,
            sorted(vec![x, y]),
            "{name}"
        );
        let holder = |owner: &str, until: i64| {
            Some(magnum_store::MonitorHolder {
                owner: owner.to_owned(),
                lease_until: at(until),
            })
        };
        assert_eq!(store.monitor_holder(x).await.unwrap(), holder("a", 10));
        assert_eq!(store.monitor_holder(z).await.unwrap(), None, "{name}");
        // Held leases are not taken; what nobody holds is.
        assert_eq!(claim("b", vec![x, y, z], 1).await, vec![z], "{name}");
        // a renews until 15: at 14 b still gets nothing of a's.
        assert_eq!(claim("a", vec![x, y], 5).await, sorted(vec![x, y]));
        assert_eq!(claim("b", vec![x, y, z], 14).await, vec![z]);
        // a stops renewing (dead): once its lease ran out, b takes its clusters over.
        assert_eq!(
            claim("b", vec![x, y, z], 16).await,
            sorted(vec![x, y, z]),
            "{name}"
        );
        assert_eq!(claim("a", vec![x, y], 17).await, Vec::<Uuid>::new());
        assert_eq!(store.monitor_holder(x).await.unwrap(), holder("b", 26));
        assert_eq!(
            store.monitor_owners("").await.unwrap(),
            vec!["b".to_owned()]
        );
        assert_eq!(
            store.monitor_owners("a").await.unwrap(),
            Vec::<String>::new()
        );
        // A same-host conductor that sees b's process gone ends its leases at once.
        assert_eq!(store.expire_monitors("b").await.unwrap(), 3);
        assert_eq!(claim("a", vec![x], 18).await, vec![x], "{name}");
        // b no longer has z among its clusters (deleted): its row goes.
        assert_eq!(claim("b", vec![y], 18).await, vec![y]);
        assert_eq!(store.monitors_of("b").await.unwrap(), vec![y]);
        // A graceful stop hands back at once: b gets x without waiting for a's lease.
        assert_eq!(store.monitor_holder(x).await.unwrap(), holder("a", 28));
        assert_eq!(store.release_monitors("a").await.unwrap(), 1);
        assert_eq!(store.monitor_holder(x).await.unwrap(), None);
        assert_eq!(
            claim("b", vec![x, y], 19).await,
            sorted(vec![x, y]),
            "{name}"
        );
        // Leases nobody renewed for long are forgotten; live ones stay.
        assert_eq!(
            store.claim_monitors("c", &[z], at(0), 1).await.unwrap(),
            vec![z]
        );
        assert_eq!(store.forget_stale_monitors(at(25)).await.unwrap(), 1);
        assert_eq!(store.monitors_of("c").await.unwrap(), Vec::<Uuid>::new());
        assert_eq!(store.monitors_of("b").await.unwrap().len(), 2);
        finish(store, database).await;
    }

    engine_tests!(
        concurrent_monitor_claims_give_each_cluster_one_holder,
        multi_thread
    );
    async fn concurrent_monitor_claims_give_each_cluster_one_holder(engine: Engine) {
        let (store, database) = fresh_store(engine).await;
        // More than one statement's worth of clusters.
        let clusters: Vec<Uuid> = (0..magnum_store::MONITOR_CLAIM_CHUNK + 50)
            .map(|_| Uuid::new_v4())
            .collect();
        let mut claimers = Vec::new();
        for claimer in 0..4 {
            let store = store.clone();
            let clusters = clusters.clone();
            claimers.push(tokio::spawn(async move {
                let owner = format!("conductor-{claimer}");
                let held = store
                    .claim_monitors(&owner, &clusters, at(0), 30)
                    .await
                    .unwrap();
                (owner, held)
            }));
        }
        let mut seen = HashSet::new();
        for claimer in claimers {
            let (owner, held) = claimer.await.unwrap();
            // What a claim says it holds is what the table says.
            assert_eq!(store.monitors_of(&owner).await.unwrap().len(), held.len());
            for cluster in held {
                assert!(
                    seen.insert(cluster),
                    "{}: {cluster} has two holders",
                    engine.name()
                );
            }
        }
        assert_eq!(
            seen.len(),
            clusters.len(),
            "{}: every cluster held",
            engine.name()
        );
        finish(store, database).await;
    }
}

engine_tests!(monitoring_reads_the_queue_clusters_and_pool);
async fn monitoring_reads_the_queue_clusters_and_pool(engine: Engine) {
    use magnum_domain::operation::{Operation, OperationKind};
    let (store, database) = fresh_store(engine).await;
    let empty = store.queue_summary().await.unwrap();
    assert_eq!(
        empty,
        magnum_store::QueueSummary::default(),
        "{}",
        engine.name()
    );
    assert!(store.cluster_tallies().await.unwrap().is_empty());
    let at = |seconds: i64| Timestamp::from_unix_seconds(1_795_425_533 + seconds);
    let first = Operation::new(
        Uuid::new_v4(),
        OperationKind::CreateCluster,
        "{}".to_owned(),
        at(5),
    );
    store.enqueue_operation(&first).await.unwrap();
    let second = Operation::new(
        Uuid::new_v4(),
        OperationKind::RotateCa,
        "{}".to_owned(),
        at(9),
    );
    store.enqueue_operation(&second).await.unwrap();
    let third = Operation::new(
        Uuid::new_v4(),
        OperationKind::DeleteCluster,
        "{}".to_owned(),
        at(1),
    );
    store.enqueue_operation(&third).await.unwrap();
    // The first enqueued is claimed; the oldest still waiting was enqueued at second 1.
    let claimed = store
        .claim_operation("a", at(20), 30)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.uuid, first.uuid);
    let summary = store.queue_summary().await.unwrap();
    assert_eq!(
        summary,
        magnum_store::QueueSummary {
            pending: 2,
            running: 1,
            oldest_pending_created_at: Some(at(1).unix_seconds()),
        },
        "{}",
        engine.name()
    );

    let stored = store
        .insert_cluster_template(&template("monitored", "p-1"))
        .await
        .unwrap();
    insert_cluster_using(&database, stored.uuid).await;
    insert_cluster_using(&database, stored.uuid).await;
    let tallies = store.cluster_tallies().await.unwrap();
    assert_eq!(
        tallies,
        vec![magnum_store::ClusterTally {
            driver: Some("local".to_owned()),
            status: "CREATE_IN_PROGRESS".to_owned(),
            health_status: None,
            count: 2,
        }],
        "{}",
        engine.name()
    );
    let pool = store.pool_usage();
    assert_eq!(pool.max, 4);
    assert!(pool.open >= 1 && pool.open <= 4, "{pool:?}");
    assert!(pool.idle <= pool.open as usize, "{pool:?}");
    finish(store, database).await;
}

mod ended_sessions {
    use std::collections::BTreeSet;

    use magnum_domain::time::Timestamp;
    use magnum_store::EndedSession;
    use sqlx::Connection;

    use super::{finish, fresh_store};
    use magnum_test_support::{engine_tests, Engine};

    fn session(digest: char, expires: Timestamp) -> EndedSession {
        EndedSession {
            login_digest: digest.to_string().repeat(64),
            expires_at: expires,
        }
    }

    fn digests(ended: Vec<EndedSession>) -> BTreeSet<String> {
        ended
            .into_iter()
            .map(|session| session.login_digest[..1].to_owned())
            .collect()
    }

    engine_tests!(ended_sessions_are_read_by_the_databases_clock_until_their_records_expire);
    async fn ended_sessions_are_read_by_the_databases_clock_until_their_records_expire(
        engine: Engine,
    ) {
        let (store, database) = fresh_store(engine).await;
        let now = Timestamp::now();
        let later = |seconds| Timestamp::from_unix_seconds(now.unix_seconds() + seconds);
        for (digest, expires) in [('a', later(3_600)), ('b', later(3_600)), ('c', later(15))] {
            store
                .record_ended_session(&session(digest, expires))
                .await
                .unwrap();
        }
        // Ending a session again (two logouts of one cookie) is no error and changes nothing.
        store
            .record_ended_session(&session('a', later(7_200)))
            .await
            .unwrap();
        // `b` ended long ago by the database's clock.
        let mut connection = sqlx::AnyConnection::connect(&database.url).await.unwrap();
        sqlx::query("UPDATE ended_session SET ended_at = 1000 WHERE login_digest LIKE 'b%'")
            .execute(&mut connection)
            .await
            .unwrap();
        connection.close().await.unwrap();
        let set = |items: &[&str]| items.iter().map(|item| (*item).to_owned()).collect();
        assert_eq!(
            digests(store.sessions_ended(None, now).await.unwrap()),
            set(&["a", "b", "c"]),
            "{}",
            engine.name()
        );
        assert_eq!(
            digests(store.sessions_ended(Some(30), now).await.unwrap()),
            set(&["a", "c"]),
            "{}: the last 30 s by the database's clock",
            engine.name()
        );
        assert_eq!(
            digests(store.sessions_ended(None, later(100)).await.unwrap()),
            set(&["a", "b"]),
            "expired records are not read"
        );
        // Revoked: `a` is kept only a while longer; a later end is never made longer.
        store
            .shorten_ended_session(&"a".repeat(64), later(50))
            .await
            .unwrap();
        store
            .shorten_ended_session(&"a".repeat(64), later(5_000))
            .await
            .unwrap();
        assert_eq!(
            digests(store.sessions_ended(None, later(100)).await.unwrap()),
            set(&["b"])
        );
        assert_eq!(store.prune_ended_sessions(later(100)).await.unwrap(), 2);
        assert_eq!(store.prune_ended_sessions(later(100)).await.unwrap(), 0);
        assert_eq!(
            digests(store.sessions_ended(None, now).await.unwrap()),
            set(&["b"])
        );
        finish(store, database).await;
    }
}
