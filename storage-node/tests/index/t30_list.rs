//! Listings: key order, prefix, start_after, limit, tombstones, and shard isolation.

use nimbus_core::index::ShardId;
use nimbus_storage_node::index::{IndexStore, ListQuery, MAX_RECORDS_PER_READ, Precondition};

use crate::{Fixture, entry, photos, shard, tombstone};

async fn put(s: &IndexStore, sh: &ShardId, key: &str) {
    s.apply(sh, key, entry(1, key), Precondition::None)
        .await
        .unwrap();
}

async fn keys(s: &IndexStore, sh: &ShardId, query: ListQuery) -> Vec<String> {
    s.list(sh, &query)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect()
}

fn query(prefix: &str, start_after: Option<&str>, limit: usize) -> ListQuery {
    ListQuery {
        prefix: prefix.to_owned(),
        start_after: start_after.map(str::to_owned),
        limit,
        include_tombstones: false,
    }
}

/// Keys in an order unlike byte order, some sharing prefixes, some not ASCII.
const KEYS: &[&str] = &[
    "b/2",
    "a",
    "b/10",
    "ab",
    "b/1",
    "é",
    "B",
    "b",
    "a/x",
    "z",
    "b/1/deep",
    "\u{1F600}",
];

async fn filled() -> Fixture {
    let f = Fixture::new().await;
    for key in KEYS {
        put(&f.store, &photos(), key).await;
    }
    f
}

fn sorted(keys: impl IntoIterator<Item = &'static str>) -> Vec<String> {
    let mut keys: Vec<String> = keys.into_iter().map(str::to_owned).collect();
    keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_returns_every_key_in_byte_order() {
    let f = filled().await;
    let all = keys(&f.store, &photos(), query("", None, 100)).await;
    assert_eq!(all, sorted(KEYS.iter().copied()));
    let records = f
        .store
        .list(&photos(), &query("", None, 100))
        .await
        .unwrap();
    for r in &records {
        assert_eq!(r.entry.etag, r.key, "each record carries its own entry");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_a_prefix_returns_only_keys_that_start_with_it() {
    let f = filled().await;
    let s = &f.store;
    assert_eq!(
        keys(s, &photos(), query("b/", None, 100)).await,
        ["b/1", "b/1/deep", "b/10", "b/2"]
    );
    assert_eq!(
        keys(s, &photos(), query("b", None, 100)).await,
        ["b", "b/1", "b/1/deep", "b/10", "b/2"]
    );
    assert_eq!(
        keys(s, &photos(), query("\u{1F600}", None, 100)).await,
        ["\u{1F600}"]
    );
    assert!(keys(s, &photos(), query("c", None, 100)).await.is_empty());
    assert!(keys(s, &photos(), query("zz", None, 100)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_after_skips_up_to_and_including_its_key() {
    let f = filled().await;
    let s = &f.store;
    // Inside the prefix, on a stored key and between stored keys.
    assert_eq!(
        keys(s, &photos(), query("b/", Some("b/1/deep"), 100)).await,
        ["b/10", "b/2"]
    );
    assert_eq!(
        keys(s, &photos(), query("b/", Some("b/1/e"), 100)).await,
        ["b/10", "b/2"]
    );
    // Before the prefix: the whole prefix; after it: nothing.
    assert_eq!(
        keys(s, &photos(), query("b/", Some("a"), 100)).await,
        ["b/1", "b/1/deep", "b/10", "b/2"]
    );
    assert!(
        keys(s, &photos(), query("b/", Some("c"), 100))
            .await
            .is_empty()
    );
    // Without a prefix.
    assert_eq!(
        keys(s, &photos(), query("", Some("z"), 100)).await,
        ["é", "\u{1F600}"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_a_limit_resume_with_start_after_and_cover_everything_once() {
    let f = filled().await;
    let s = &f.store;
    assert!(keys(s, &photos(), query("", None, 0)).await.is_empty());
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = keys(s, &photos(), query("", after.as_deref(), 5)).await;
        assert!(page.len() <= 5);
        let Some(last) = page.last().cloned() else {
            break;
        };
        pages.extend(page);
        after = Some(last);
    }
    assert_eq!(pages, sorted(KEYS.iter().copied()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_listed_only_when_asked_and_never_count_towards_the_limit() {
    let f = filled().await;
    let s = &f.store;
    for key in ["a", "a/x", "ab"] {
        s.apply(&photos(), key, tombstone(2), Precondition::None)
            .await
            .unwrap();
    }
    assert_eq!(keys(s, &photos(), query("", None, 2)).await, ["B", "b"]);
    assert_eq!(
        keys(s, &photos(), query("a", None, 100)).await,
        Vec::<String>::new()
    );
    let with = ListQuery {
        include_tombstones: true,
        ..query("a", None, 100)
    };
    let records = s.list(&photos(), &with).await.unwrap();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.entry.is_tombstone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_containers_and_accounts_do_not_bleed_into_each_other() {
    let f = Fixture::new().await;
    let s = &f.store;
    let neighbours = [
        shard("acct", "a", 1),
        shard("acct", "ab", 1),
        shard("acct", "a", 2),
        shard("acct", "a", 0),
        shard("acc", "ta", 1),
        shard("acctb", "a", 1),
        shard("acct", "b", 1),
    ];
    for (i, sh) in neighbours.iter().enumerate() {
        put(s, sh, &format!("key-{i}")).await;
        put(s, sh, "shared").await;
    }
    for (i, sh) in neighbours.iter().enumerate() {
        assert_eq!(
            keys(s, sh, query("", None, 100)).await,
            [format!("key-{i}"), "shared".to_owned()],
            "shard {sh}"
        );
        assert_eq!(s.last_seq(sh).await.unwrap(), 2, "shard {sh}");
        let since = s.entries_since(sh, 0, 100).await.unwrap();
        assert_eq!(since.len(), 2, "shard {sh}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_limit_is_capped_without_overflowing() {
    let f = Fixture::new().await;
    put(&f.store, &photos(), "only").await;
    let all = keys(&f.store, &photos(), query("", None, usize::MAX)).await;
    assert_eq!(all, ["only"]);
    // An S3 page of 1000 keys fits in one read.
    const { assert!(MAX_RECORDS_PER_READ >= 1000) };
}
