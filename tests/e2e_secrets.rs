//! Secret keys with real processes: a worker started with a key that cannot open the
//! fleet's destinations refuses to start and names the variable; `courier secrets rotate`
//! re-seals every destination with a new key while the old one is given as a previous key,
//! after which a worker with only the new key delivers.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_refuses_to_start_and_rotation_moves_the_fleet_to_a_new_key() {
    let mut stack = Stack::start(0).await;
    let body = stack.destination_body("CSV", "NONE", "keys/");
    let dest = stack.create_destination(&body).await;
    let old_key = stack.secret_key.clone();
    let new_key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);

    // A worker with only the new key: it would fail every delivery, so it does not start.
    let wrong = stack.add_worker_with_env(&[("COURIER_SECRET_KEY", new_key.clone())]);
    let status = stack
        .wait_worker_exit(wrong, Duration::from_secs(30))
        .await
        .expect("the worker exits by itself");
    assert!(!status.success());
    let log = stack.workers[wrong].0.logs();
    assert!(log.contains("COURIER_SECRET_KEY"), "{log}");
    assert!(
        log.contains("cannot open the fleet's destinations"),
        "{log}"
    );
    assert!(
        !log.contains(&new_key) && !log.contains(&old_key),
        "no key in the log"
    );

    // Rotate: the new key seals, the old one opens.
    let rotate = |previous: Option<&str>| {
        let mut cmd = stack.courier(&["secrets", "rotate"]);
        cmd.env("COURIER_SECRET_KEY", &new_key);
        if let Some(p) = previous {
            cmd.env("COURIER_PREVIOUS_SECRET_KEYS", p);
        }
        cmd.output().unwrap()
    };
    let out = rotate(None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "without the old key nothing opens"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 could not be opened"));
    let out = rotate(Some(&old_key));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("1 re-sealed"), "{said}");
    let out = rotate(Some(&old_key));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("0 re-sealed"),
        "a second run has nothing left to do"
    );

    // A worker with only the new key now starts and delivers.
    let worker = stack.add_worker_with_env(&[("COURIER_SECRET_KEY", new_key.clone())]);
    stack.wait_worker(worker).await;
    let id = stack.enqueue(&dest, "job-after-rotation", "INV-R").await;
    stack
        .wait_status(&id, "DELIVERED", Duration::from_secs(60))
        .await;
    assert!(
        stack
            .object("keys/mapping_results_INV-R_2026-06-07.csv")
            .await
            .is_some()
    );
}
