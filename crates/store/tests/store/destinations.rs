//! Destinations: sealed secrets, tenants, the paused set, paging.

use base64::Engine as _;
use courier_core::destination::{
    BucketName, Credentials, DestinationSpec, DestinationStatus, PathPrefix, Region, S3Settings,
    Secret, StaticCredentials,
};
use courier_core::{Compression, Format};
use courier_store::{DestinationStore, DestinationSummary, SecretCipher, StoreError};
use redis::AsyncCommands;

use crate::{ns, tenant};

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY";

pub(crate) fn cipher() -> SecretCipher {
    SecretCipher::from_base64(&base64::engine::general_purpose::STANDARD.encode([7u8; 32])).unwrap()
}

pub(crate) fn spec(name: &str, status: DestinationStatus) -> DestinationSpec {
    DestinationSpec {
        name: name.into(),
        s3: S3Settings {
            bucket: BucketName::parse("acme-results").unwrap(),
            region: Region::parse("eu-west-1").unwrap(),
            endpoint_url: None,
            path_prefix: PathPrefix::parse("out/").unwrap(),
            credentials: Credentials::Static(StaticCredentials {
                access_key_id: "AKIAEXAMPLE".into(),
                secret_access_key: Secret::new(SECRET),
            }),
            write: Default::default(),
        },
        format: Format::Csv,
        compression: Compression::Gzip,
        csv: Default::default(),
        parquet: Default::default(),
        status,
        batch: None,
    }
}

#[tokio::test]
async fn csv_settings_round_trip_and_default_to_off_when_absent() {
    use courier_core::format::CsvOptions;
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let store = DestinationStore::new(ns.conn.clone(), ns.keys.clone(), Some(cipher()));
    let acme = tenant("acme");
    let mut safe = spec("safe", DestinationStatus::Active);
    safe.csv = CsvOptions {
        neutralize_formulas: true,
    };
    let d = store.create(&acme, safe.clone()).await.unwrap();
    let raw: String = c.get(ns.keys.destination(&d.id)).await.unwrap();
    let stored: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        stored["csv"],
        serde_json::json!({"neutralizeFormulas": true})
    );
    assert_eq!(store.get(&acme, &d.id).await.unwrap().unwrap().spec, safe);

    // Off is not written at all, so a destination saved before CSV had settings (no `csv`
    // field) is the same thing, and reads back with the option off.
    let old = store
        .create(&acme, spec("old", DestinationStatus::Active))
        .await
        .unwrap();
    let raw: String = c.get(ns.keys.destination(&old.id)).await.unwrap();
    let stored: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert!(stored.get("csv").is_none(), "{raw}");
    let read = store.get(&acme, &old.id).await.unwrap().unwrap();
    assert_eq!(read.spec.csv, CsvOptions::default());
    assert!(!read.spec.csv.neutralize_formulas);
}

#[tokio::test]
async fn parquet_settings_round_trip_and_default_when_absent() {
    use courier_core::format::{ColumnType, ParquetCompression, ParquetOptions};
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let store = DestinationStore::new(ns.conn.clone(), ns.keys.clone(), Some(cipher()));
    let acme = tenant("acme");
    let mut parquet = spec("pq", DestinationStatus::Active);
    parquet.format = Format::Parquet;
    parquet.compression = Compression::None;
    parquet.parquet = ParquetOptions {
        compression: ParquetCompression::Snappy,
        column_types: [("at".to_owned(), ColumnType::Timestamp)].into(),
    };
    let d = store.create(&acme, parquet.clone()).await.unwrap();
    assert_eq!(
        store.get(&acme, &d.id).await.unwrap().unwrap().spec,
        parquet
    );

    // A destination saved before Parquet existed has no `parquet` field: the defaults.
    let csv = store
        .create(&acme, spec("old", DestinationStatus::Active))
        .await
        .unwrap();
    let key = ns.keys.destination(&csv.id);
    let raw: String = c.get(&key).await.unwrap();
    let mut stored: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert!(
        stored.as_object_mut().unwrap().remove("parquet").is_some(),
        "{raw}"
    );
    let _: () = c.set(&key, stored.to_string()).await.unwrap();
    let read = store.get(&acme, &csv.id).await.unwrap().unwrap();
    assert_eq!(read.spec.parquet, ParquetOptions::default());
}

#[tokio::test]
async fn role_credentials_and_write_options_round_trip_and_default_when_absent() {
    use courier_core::destination::{ExternalId, RoleArn, RoleCredentials, WriteOptions};
    use courier_core::write_options::{
        AccountId, CannedAcl, KmsKeyId, ObjectTags, ServerSideEncryption, StorageClass,
    };
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let store = DestinationStore::new(ns.conn.clone(), ns.keys.clone(), Some(cipher()));
    let acme = tenant("acme");
    let mut role = spec("role", DestinationStatus::Active);
    role.s3.credentials = Credentials::Role(RoleCredentials {
        role_arn: RoleArn::parse("arn:aws:iam::123456789012:role/courier").unwrap(),
        external_id: ExternalId::parse("abcdefghijklmnopqrstuvwxyz012345").unwrap(),
    });
    role.s3.write = WriteOptions {
        server_side_encryption: Some(ServerSideEncryption::AwsKms),
        kms_key_id: Some(KmsKeyId::parse("alias/courier").unwrap()),
        storage_class: Some(StorageClass::StandardIa),
        tags: ObjectTags::parse([("team".to_owned(), "data".to_owned())].into()).unwrap(),
        canned_acl: Some(CannedAcl::BucketOwnerFullControl),
        expected_bucket_owner: Some(AccountId::parse("123456789012").unwrap()),
    };
    let d = store.create(&acme, role.clone()).await.unwrap();
    assert_eq!(store.get(&acme, &d.id).await.unwrap().unwrap().spec, role);
    let raw: String = c.get(ns.keys.destination(&d.id)).await.unwrap();
    assert!(
        !raw.contains("secretSealed\":\""),
        "a role has no sealed secret: {raw}"
    );

    // A destination saved before write options existed has no `write` field: the defaults.
    let old = store
        .create(&acme, spec("old", DestinationStatus::Active))
        .await
        .unwrap();
    let key = ns.keys.destination(&old.id);
    let raw: String = c.get(&key).await.unwrap();
    let mut stored: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let obj = stored.as_object_mut().unwrap();
    assert!(obj.remove("write").is_some(), "{raw}");
    assert!(
        !obj.contains_key("roleArn") && !obj.contains_key("externalId"),
        "{raw}"
    );
    let _: () = c.set(&key, stored.to_string()).await.unwrap();
    let read = store.get(&acme, &old.id).await.unwrap().unwrap();
    assert_eq!(read.spec.s3.write, WriteOptions::default());
    assert_eq!(read.spec, spec("old", DestinationStatus::Active));
}

#[tokio::test]
async fn a_tenant_has_one_external_id_even_when_first_read_concurrently() {
    use courier_store::TenantStore;
    let ns = ns().await;
    let store = TenantStore::new(ns.conn.clone(), ns.keys.clone());
    let acme = tenant("acme");
    let reads = futures::future::join_all((0..8).map(|_| store.external_id(&acme))).await;
    let ids: Vec<String> = reads
        .into_iter()
        .map(|r| r.unwrap().as_str().to_owned())
        .collect();
    assert_eq!(ids[0].len(), 32);
    assert!(
        ids[0].bytes().all(|b| b.is_ascii_alphanumeric()),
        "{}",
        ids[0]
    );
    assert!(ids.iter().all(|i| i == &ids[0]), "{ids:?}");
    assert_eq!(store.external_id(&acme).await.unwrap().as_str(), ids[0]);
    let other = store.external_id(&tenant("globex")).await.unwrap();
    assert_ne!(other.as_str(), ids[0], "one per tenant");
}

#[tokio::test]
async fn a_destination_is_stored_sealed_and_read_back_by_its_tenant_only() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let store = DestinationStore::new(ns.conn.clone(), ns.keys.clone(), Some(cipher()));
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let d = store
        .create(&acme, spec("main", DestinationStatus::Active))
        .await
        .unwrap();
    assert_eq!(d.spec, spec("main", DestinationStatus::Active));

    let raw: String = c.get(ns.keys.destination(&d.id)).await.unwrap();
    assert!(!raw.contains(SECRET), "the secret is sealed at rest: {raw}");
    assert_eq!(store.get(&acme, &d.id).await.unwrap(), Some(d.clone()));
    assert_eq!(store.get(&globex, &d.id).await.unwrap(), None);
    assert_eq!(store.get_any(&d.id).await.unwrap(), Some(d.clone()));
    assert_eq!(
        store.summary(&acme, &d.id).await.unwrap(),
        Some(DestinationSummary {
            id: d.id.clone(),
            format: Format::Csv,
            compression: Compression::Gzip,
            status: DestinationStatus::Active,
            batch: None,
        })
    );
    assert_eq!(store.summary(&globex, &d.id).await.unwrap(), None);

    // Without the key, the summary reads but the secret does not; nor can one be saved.
    let keyless = DestinationStore::new(ns.conn.clone(), ns.keys.clone(), None);
    assert!(keyless.summary(&acme, &d.id).await.unwrap().is_some());
    assert!(matches!(
        keyless.get(&acme, &d.id).await,
        Err(StoreError::NoSecretKey)
    ));
    assert!(matches!(
        keyless
            .create(&acme, spec("x", DestinationStatus::Active))
            .await,
        Err(StoreError::NoSecretKey)
    ));
}

#[tokio::test]
async fn pausing_deleting_and_paging_keep_the_sets_in_step() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let store = DestinationStore::new(ns.conn.clone(), ns.keys.clone(), Some(cipher()));
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let paused = ns.keys.paused_destinations();
    let d = store
        .create(&acme, spec("a", DestinationStatus::Paused))
        .await
        .unwrap();
    let members: Vec<String> = c.smembers(&paused).await.unwrap();
    assert_eq!(members, [d.id.as_str()]);

    let updated = store
        .update(&acme, &d.id, spec("a2", DestinationStatus::Active))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.spec.name, "a2");
    assert_eq!(updated.created_at, d.created_at);
    assert_eq!(c.scard::<_, u64>(&paused).await.unwrap(), 0);
    assert_eq!(
        store
            .update(&globex, &d.id, spec("b", DestinationStatus::Active))
            .await
            .unwrap(),
        None,
        "another tenant's destination cannot be updated"
    );

    // Pages of two in the order of ids (ULIDs: the creation order, give or take the
    // order of ids made in the same millisecond).
    let mut ids = vec![d.id.clone()];
    for name in ["b", "c"] {
        let d = store
            .create(&acme, spec(name, DestinationStatus::Active))
            .await
            .unwrap();
        ids.push(d.id);
    }
    ids.sort();
    let (page, next) = store.list(&acme, 2, None).await.unwrap();
    assert_eq!(
        page.iter().map(|d| &d.id).collect::<Vec<_>>(),
        [&ids[0], &ids[1]]
    );
    assert_eq!(next.as_ref(), Some(&ids[1]));
    let (page, next) = store.list(&acme, 2, next.as_ref()).await.unwrap();
    assert_eq!(page.iter().map(|d| &d.id).collect::<Vec<_>>(), [&ids[2]]);
    assert_eq!(next, None);
    assert!(store.list(&globex, 2, None).await.unwrap().0.is_empty());

    // Deleting forgets its health, failing state and batch seal too.
    let _: () = c.set(ns.keys.health(&ids[0]), "{}").await.unwrap();
    let _: () = c
        .set(ns.keys.batch_sealed(&ids[0]), 1_767_225_600)
        .await
        .unwrap();
    let _: () = c
        .sadd(ns.keys.failing_destinations(), ids[0].as_str())
        .await
        .unwrap();
    assert!(!store.delete(&globex, &ids[0]).await.unwrap());
    assert!(store.delete(&acme, &ids[0]).await.unwrap());
    assert!(!store.delete(&acme, &ids[0]).await.unwrap());
    assert!(
        !c.exists::<_, bool>(ns.keys.destination(&ids[0]))
            .await
            .unwrap()
    );
    assert!(!c.exists::<_, bool>(ns.keys.health(&ids[0])).await.unwrap());
    assert!(
        !c.exists::<_, bool>(ns.keys.batch_sealed(&ids[0]))
            .await
            .unwrap()
    );
    assert_eq!(
        c.scard::<_, u64>(ns.keys.failing_destinations())
            .await
            .unwrap(),
        0
    );
    let left: Vec<String> = c
        .zrange(ns.keys.tenant_destinations(&acme), 0, -1)
        .await
        .unwrap();
    assert_eq!(left, [ids[1].as_str(), ids[2].as_str()]);
}

fn key(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

#[tokio::test]
async fn a_new_key_finds_what_it_cannot_open_and_rotation_reseals_everything() {
    let ns = ns().await;
    let acme = tenant("acme");
    let old = SecretCipher::from_base64(&key(1)).unwrap();
    let with_old = DestinationStore::new(ns.conn.clone(), ns.keys.clone(), Some(old.clone()));
    let mut ids = Vec::new();
    for i in 0..3 {
        let d = with_old
            .create(&acme, spec(&format!("d{i}"), DestinationStatus::Active))
            .await
            .unwrap();
        ids.push(d.id);
    }
    // A destination without a secret needs no key.
    let mut unsigned = spec("public", DestinationStatus::Active);
    unsigned.s3.credentials = Credentials::Anonymous;
    with_old.create(&acme, unsigned).await.unwrap();

    // A process started with only the new key sees it cannot open them, and which key they need.
    let new_only = SecretCipher::from_base64(&key(2)).unwrap();
    let store = DestinationStore::new(ns.conn.clone(), ns.keys.clone(), Some(new_only));
    let found = store.sealing_keys().await.unwrap();
    assert_eq!(found.sealed, 3);
    assert_eq!(found.missing, vec![old.key_id().to_owned()]);
    assert!(matches!(
        store.get_any(&ids[0]).await,
        Err(StoreError::UnknownSecretKey(id)) if id == old.key_id()
    ));
    // It cannot rotate either: it lacks the key to open them.
    let done = store.reseal_all().await.unwrap();
    assert_eq!(done.resealed, 0);
    assert_eq!(done.unopenable.len(), 3);

    // With the old key as a previous key it opens them, and rotation re-seals them all.
    let both = SecretCipher::from_base64(&key(2))
        .unwrap()
        .with_previous(&key(1))
        .unwrap();
    let store = DestinationStore::new(ns.conn.clone(), ns.keys.clone(), Some(both.clone()));
    assert_eq!(
        store.sealing_keys().await.unwrap().missing,
        Vec::<String>::new()
    );
    let done = store.reseal_all().await.unwrap();
    assert_eq!((done.resealed, done.current, done.raced), (3, 1, 0));
    assert!(done.unopenable.is_empty());
    // Running it again finds nothing left to do.
    let again = store.reseal_all().await.unwrap();
    assert_eq!((again.resealed, again.current), (0, 4));

    // Now the new key alone opens every destination, with the same secret.
    let new_only = SecretCipher::from_base64(&key(2)).unwrap();
    let store = DestinationStore::new(ns.conn.clone(), ns.keys.clone(), Some(new_only));
    assert_eq!(
        store.sealing_keys().await.unwrap().missing,
        Vec::<String>::new()
    );
    for id in &ids {
        let d = store.get_any(id).await.unwrap().unwrap();
        let Credentials::Static(c) = d.spec.s3.credentials else {
            panic!("static")
        };
        assert_eq!(c.secret_access_key.expose(), SECRET);
    }
}

#[tokio::test]
async fn the_destination_quota_is_checked_in_the_write_and_frees_on_delete() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let store = DestinationStore::new(ns.conn.clone(), ns.keys.clone(), Some(cipher()));
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    // Twelve racing creates for three places: exactly three are saved.
    let results =
        futures::future::join_all((0..12).map(|i| {
            store.create_within(&acme, spec(&format!("d{i}"), DestinationStatus::Paused), 3)
        }))
        .await;
    let saved: Vec<_> = results
        .into_iter()
        .filter_map(|r| r.unwrap().ok())
        .collect();
    assert_eq!(saved.len(), 3);
    assert_eq!(store.count(&acme).await.unwrap(), 3);
    let stored: Vec<String> = c.keys(ns.keys.destination_pattern()).await.unwrap();
    assert_eq!(
        stored.len(),
        3,
        "no refused destination was half-saved: {stored:?}"
    );
    let paused: u64 = c.scard(ns.keys.paused_destinations()).await.unwrap();
    assert_eq!(paused, 3, "only the saved ones are in the paused set");
    assert_eq!(
        store
            .create_within(&acme, spec("one more", DestinationStatus::Active), 3)
            .await
            .unwrap()
            .unwrap_err(),
        courier_store::Full { used: 3 }
    );
    // Another tenant has its own count; 0 means no limit.
    store
        .create_within(&globex, spec("g", DestinationStatus::Active), 3)
        .await
        .unwrap()
        .unwrap();
    assert!(store.delete(&acme, &saved[0].id).await.unwrap());
    store
        .create_within(&acme, spec("after delete", DestinationStatus::Active), 3)
        .await
        .unwrap()
        .unwrap();
    store
        .create_within(&acme, spec("unlimited", DestinationStatus::Active), 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.count(&acme).await.unwrap(), 4);
}
