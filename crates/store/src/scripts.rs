//! The Lua scripts behind the store's atomic operations, one `.lua` file per script under
//! `src/lua/`. Each file opens (after Redis's `#!lua flags=…` line, where a script needs
//! one) with a header naming every `KEYS[n]` and `ARGV[n]` it takes,
//! and every key a script touches comes in `KEYS`, named by [`crate::keys`]; the scripts
//! never build key names themselves.

use std::sync::LazyLock;

use redis::Script;

macro_rules! scripts {
    ($($(#[$doc:meta])* $name:ident = $file:literal $(with [$($lib:literal),*])?;)*) => {
        $(
            $(#[$doc])*
            pub(crate) static $name: LazyLock<Script> =
                LazyLock::new(|| Script::new(source!($file $(, $($lib),*)?)));
        )*
        /// Every script's file name and SHA-1 (what `EVALSHA` names it by), for tools that
        /// read Redis's command stream.
        pub fn script_hashes() -> Vec<(&'static str, String)> {
            vec![$(($file, $name.get_hash().to_owned()),)*]
        }

        /// Every script's file name and source, for the header checks.
        #[cfg(test)]
        pub(crate) const SOURCES: &[(&str, &str)] = &[
            $(($file, include_str!(concat!("lua/", $file))),)*
        ];
    };
}

/// A script's source: the functions of its `lib/` files, then its own file.
macro_rules! source {
    ($file:literal $(, $lib:literal)*) => {
        concat!($(include_str!(concat!("lua/lib/", $lib)),)* include_str!(concat!("lua/", $file)))
    };
}

/// The functions scripts share (`lib/NAME.lua` defines `local function NAME(K, A)`), each
/// with a header of its `K[n]` and `A[n]`, for the header checks.
#[cfg(test)]
pub(crate) const LIBS: &[(&str, &str)] = &[
    ("record_write.lua", include_str!("lua/lib/record_write.lua")),
    ("record_admit.lua", include_str!("lua/lib/record_admit.lua")),
    ("key_mark.lua", include_str!("lua/lib/key_mark.lua")),
    ("key_unlock.lua", include_str!("lua/lib/key_unlock.lua")),
    ("slot_release.lua", include_str!("lua/lib/slot_release.lua")),
    ("key_lock.lua", include_str!("lua/lib/key_lock.lua")),
    ("slot_acquire.lua", include_str!("lua/lib/slot_acquire.lua")),
];

/// [`RECORD_PUT`]'s source, for `EVAL` in a `MULTI` block ([`crate::RecordStore::put_into`]),
/// where a script Redis does not know yet could not be loaded first.
pub(crate) const RECORD_PUT_SOURCE: &str = source!("record_put.lua", "record_write.lua");

scripts! {
    /// [`crate::KeyGuard::lock`].
    KEY_LOCK = "key_lock.lua" with ["key_lock.lua"];
    /// [`crate::KeyGuard::unlock`].
    KEY_UNLOCK = "key_unlock.lua" with ["key_unlock.lua"];
    /// [`crate::KeyGuard::mark`].
    KEY_MARK = "key_mark.lua" with ["key_mark.lua"];
    /// [`crate::UploadSlots::acquire`].
    SLOT_ACQUIRE = "slot_acquire.lua" with ["slot_acquire.lua"];
    /// [`crate::claim`]: the key lock, an upload slot and the marker in one step.
    CLAIM = "claim.lua" with ["key_lock.lua", "slot_acquire.lua", "record_write.lua"];
    /// [`crate::UploadSlots::release`].
    SLOT_RELEASE = "slot_release.lua" with ["slot_release.lua"];
    /// [`crate::DeliveryQueue::hand_back`].
    HAND_BACK = "hand_back.lua";
    /// [`crate::DeliveryQueue::promote_due`].
    PROMOTE_DUE = "promote_due.lua";
    /// [`crate::Janitor::sweep`]: finished apalis tasks.
    DROP_DONE_TASKS = "drop_done_tasks.lua";
    /// [`crate::Janitor::sweep`]: expired index entries.
    TRIM_INDEX = "trim_index.lua";
    /// [`crate::StatsReader::read`].
    QUEUE_SNAPSHOT = "queue_snapshot.lua";
    /// [`crate::DestinationStore::reseal_all`].
    COMPARE_AND_SET = "compare_and_set.lua";
    /// [`crate::DeliveryQueue::retry_after_storage_failure`].
    STORAGE_RETRY = "storage_retry.lua";
    /// [`crate::Janitor::sweep`]: tasks apalis-redis gave up on.
    ADOPT_DEAD_TASK = "adopt_dead_task.lua";
    /// [`crate::DestinationStore::create_within`].
    DESTINATION_CREATE = "destination_create.lua";
    /// [`crate::RecordStore::put_queued`].
    RECORD_QUEUED = "record_queued.lua" with ["record_admit.lua"];
    /// [`crate::RecordStore::put`].
    RECORD_PUT = "record_put.lua" with ["record_write.lua"];
    /// [`crate::finish_delivered`]: the end of a delivered upload in one step.
    FINISH = "finish.lua" with ["key_mark.lua", "record_write.lua", "slot_release.lua", "key_unlock.lua"];
    /// [`crate::RateLimiter::take_connection_test`].
    RATE_WINDOW = "rate_window.lua";
    /// [`crate::HeldDeliveries::expire`].
    DEAD_LETTER_FROM_HELD = "dead_letter_from_held.lua";
    /// [`crate::BatchStore::append`].
    BATCH_APPEND = "batch_append.lua" with ["record_admit.lua"];
    /// [`crate::BatchStore::claim`].
    BATCH_CLAIM = "batch_claim.lua";
    /// [`crate::BatchStore::renew`].
    BATCH_RENEW = "batch_renew.lua";
    /// [`crate::BatchStore::done`].
    BATCH_DONE = "batch_done.lua";
    /// [`crate::BatchStore::retry_later`].
    BATCH_RETRY = "batch_retry.lua";
    /// [`crate::BatchStore::fail`].
    BATCH_FAIL = "batch_fail.lua";
    /// [`crate::BatchStore::reopen`].
    BATCH_REOPEN = "batch_reopen.lua";
}

#[cfg(test)]
mod tests {
    use super::{LIBS, SOURCES};

    /// The `n`s of every `NAME[n]` (a literal number) in `text`.
    fn indexes(text: &str, name: &str) -> Vec<u32> {
        let pat = format!("{name}[");
        text.match_indices(&pat)
            .filter_map(|(at, _)| {
                let rest = &text[at + pat.len()..];
                let end = rest.find(']')?;
                rest[..end].parse().ok()
            })
            .collect()
    }

    /// A Lua file's opening comment lines, and the rest.
    fn header_and_body(source: &str) -> (String, &str) {
        let header: String = source
            .lines()
            .take_while(|l| l.starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        let body = &source[header.len()..];
        (header, body)
    }

    #[test]
    fn every_script_documents_each_key_and_argument_it_uses() {
        assert_eq!(SOURCES.len(), 27);
        for (file, source) in SOURCES {
            // A script may open with Redis's flags line (`#!lua flags=allow-oom`).
            let source = match source.strip_prefix("#!") {
                Some(rest) => rest.split_once('\n').map_or("", |(_, body)| body),
                None => source,
            };
            let (header, body) = header_and_body(source);
            assert!(header.contains("-- KEYS[1]: "), "{file}: no KEYS header");
            for name in ["KEYS", "ARGV"] {
                for n in indexes(body, name) {
                    assert!(
                        header.contains(&format!("-- {name}[{n}]"))
                            || header.contains(&format!("-- {name}[{n} ..")),
                        "{file}: {name}[{n}] is used but not in the header"
                    );
                }
            }
            assert!(header.contains("-- Returns: "), "{file}: no Returns line");
        }
    }

    /// Whether a line of Lua extends a key (`KEYS[1] .. ':' .. id`) or glues one from a
    /// prefix and a `':suffix'` literal (`ARGV[3] .. d .. ':held'`).
    fn builds_a_key(line: &str) -> bool {
        let squeezed: String = line.split_whitespace().collect();
        let extends_a_key = squeezed.match_indices("KEYS[").any(|(at, _)| {
            squeezed[at..]
                .find(']')
                .is_some_and(|end| squeezed[at + end + 1..].starts_with(".."))
        });
        extends_a_key || squeezed.contains("..':") || squeezed.contains("..\":")
    }

    #[test]
    fn every_library_function_documents_each_key_and_argument_it_uses() {
        assert_eq!(LIBS.len(), 7);
        for (file, source) in LIBS {
            let (header, body) = header_and_body(source);
            let name = file.trim_end_matches(".lua");
            assert!(
                header.starts_with(&format!("-- {name}(K, A): ")),
                "{file}: the header does not open with the function's name"
            );
            assert!(
                body.contains(&format!("local function {name}(K, A)")),
                "{file}: does not define `{name}(K, A)`"
            );
            assert!(
                !body.contains("KEYS[") && !body.contains("ARGV["),
                "{file}: a library function takes its keys and arguments as K and A"
            );
            assert!(header.contains("-- K[1]: "), "{file}: no K header");
            for n in indexes(body, "K") {
                assert!(
                    header.contains(&format!("-- K[{n}]"))
                        || header.contains(&format!("-- K[{n} ..")),
                    "{file}: K[{n}] is used but not in the header"
                );
            }
            for n in indexes(body, "A") {
                assert!(
                    header.contains(&format!("-- A[{n}]")),
                    "{file}: A[{n}] is used but not in the header"
                );
            }
            assert!(header.contains("-- Returns: "), "{file}: no Returns line");
        }
    }

    #[test]
    fn no_script_builds_a_key_name() {
        for (file, source) in SOURCES.iter().chain(LIBS) {
            for line in source.lines().filter(|l| !l.trim_start().starts_with("--")) {
                assert!(
                    !builds_a_key(line),
                    "{file}: a key built by concatenation: {line}"
                );
            }
        }
    }

    #[test]
    fn the_check_catches_the_old_ways_and_spares_values() {
        assert!(builds_a_key("redis.call('DEL', KEYS[3] .. ':' .. id)"));
        assert!(builds_a_key("redis.call('LLEN', ARGV[3] .. d .. ':held')"));
        assert!(!builds_a_key(
            "redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'EX', ARGV[3])"
        ));
    }
}
