//! Destination health: a streak of permanent failures makes a destination FAILING.

use courier_core::DestinationId;
use courier_store::{DestinationHealth, HealthStore};

use crate::ns;

#[tokio::test]
async fn the_threshold_th_failure_in_a_row_marks_failing_and_a_success_clears_it() {
    let ns = ns().await;
    let health = HealthStore::new(ns.conn.clone(), ns.keys.clone());
    let (dest, other) = (DestinationId::generate(), DestinationId::generate());
    assert_eq!(
        health.get(&dest).await.unwrap(),
        DestinationHealth::default()
    );

    for n in 1..=2 {
        let h = health
            .record_permanent_failure(&dest, "AccessDenied", &format!("denied {n}"), 3)
            .await
            .unwrap();
        assert_eq!(h.consecutive_failures, n);
        assert!(!h.is_failing());
    }
    assert_eq!(health.failing_count().await.unwrap(), 0);
    let third = health
        .record_permanent_failure(&dest, "NoSuchBucket", "gone", 3)
        .await
        .unwrap();
    assert!(third.is_failing());
    assert_eq!(
        (
            third.last_error_code.as_deref(),
            third.last_error_message.as_deref()
        ),
        (Some("NoSuchBucket"), Some("gone"))
    );
    assert_eq!(health.get(&dest).await.unwrap(), third);
    assert_eq!(health.failing_count().await.unwrap(), 1);
    // Failing since the third failure, not the fourth.
    let fourth = health
        .record_permanent_failure(&dest, "NoSuchBucket", "gone", 3)
        .await
        .unwrap();
    assert_eq!(fourth.consecutive_failures, 4);
    assert_eq!(fourth.failing_since, third.failing_since);
    health
        .record_permanent_failure(&other, "AccessDenied", "x", 1)
        .await
        .unwrap();
    assert_eq!(health.failing_count().await.unwrap(), 2);

    health.record_success(&dest).await.unwrap();
    assert_eq!(
        health.get(&dest).await.unwrap(),
        DestinationHealth::default()
    );
    assert_eq!(health.failing_count().await.unwrap(), 1);
    health.clear(&other).await.unwrap();
    assert_eq!(health.failing_count().await.unwrap(), 0);
}
