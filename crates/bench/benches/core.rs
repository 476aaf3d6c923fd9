//! Micro-benchmarks of the hot steps: picking parts, merging pulled parts, encoding capsules
//! (with the legacy full-row encoding measured beside them as the baseline).

use std::hint::black_box;
use std::sync::Arc;

use capsule_bench::workload::{Rush, RushConfig, throughput_order_insert, throughput_shift_insert};
use capsule_protocol::MutationBatch;
use capsule_protocol::{Frame, Schema};
use capsule_store::{ApplyMode, Durability, Store};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

/// A hub store after a 200-order rush, and the id of a finished order.
fn hub() -> (tempfile::TempDir, Store, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("hub.sqlite3"), Arc::new(Schema::builtin())).unwrap();
    let mode = ApplyMode::Authoritative {
        source: "bench".into(),
    };
    for step in Rush::new(RushConfig::default()) {
        store.apply(&step.batch, &mode).unwrap();
    }
    let ids = store
        .table_rows("order_header")
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    (dir, store, ids)
}

/// `n` requests of one new order each, as the write-throughput run sends them.
fn order_inserts(n: usize) -> Vec<MutationBatch> {
    (0..n)
        .map(|w| serde_json::from_value(throughput_order_insert(w)).unwrap())
        .collect()
}

/// A hub store for the write benchmarks; `staffed`: the shop has staff, so every write is
/// checked against its cashier's role and leaves an audit row.
fn write_hub(staffed: bool) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path().join("hub.sqlite3"),
        Arc::new(Schema::builtin()),
        Durability::Replica,
    )
    .unwrap();
    let mode = ApplyMode::Authoritative {
        source: "bench".into(),
    };
    if staffed {
        let staff: MutationBatch = serde_json::from_value(serde_json::json!({"mutations": [
            {"mid": uuid::Uuid::now_v7().to_string(), "table": "staff", "action": "insert",
             "row": {"id": "st-owner", "name": "Owner", "role": "owner"}},
            {"mid": uuid::Uuid::now_v7().to_string(), "table": "staff", "action": "insert",
             "row": {"id": "st-mona", "name": "Mona", "role": "cashier"}},
            {"mid": uuid::Uuid::now_v7().to_string(), "table": "staff_pin", "action": "save",
             "row": {"id": "st-owner", "pin_hash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}}
        ]}))
        .unwrap();
        store.apply(&staff, &mode).unwrap();
    }
    let mut shift: MutationBatch = serde_json::from_value(throughput_shift_insert()).unwrap();
    as_cashier(&mut shift, staffed);
    store.apply(&shift, &mode).unwrap();
    (dir, store)
}

/// Stamps a request as the node serving Mona's screen would (in a staffed shop).
fn as_cashier(batch: &mut MutationBatch, staffed: bool) {
    if !staffed {
        return;
    }
    for m in &mut batch.mutations {
        m.by = Some(capsule_protocol::Actor {
            staff: Some("st-mona".into()),
            approver: None,
            approved: None,
            device: Some("till-a".into()),
            at: Some("2026-12-07T12:00:00.000Z".into()),
            // Rung up at the menu's prices, as the serving node stamps them.
            menu_price: m.row.get("unit_price").and_then(|v| v.as_i64()),
            menu_modifier_price: m.row.get("modifier_price").and_then(|v| v.as_i64()),
            menu_modifiers: m
                .row
                .get("modifiers")
                .and_then(|v| v.as_str())
                .map(String::from),
        });
    }
}

/// The hub's work per write on its writer thread, without the fsync (the store is opened
/// with a replica's synchronous=NORMAL so the disk does not drown the CPU cost): a shop
/// without staff (the baseline) and one with staff, in the same run.
fn hub_apply(c: &mut Criterion) {
    for staffed in [false, true] {
        let (_dir, store) = write_hub(staffed);
        let name = if staffed {
            "hub apply: 32 one-order requests in one group, staffed (permission + audit)"
        } else {
            "hub apply: 32 one-order requests in one group"
        };
        c.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut batches = order_inserts(32);
                    for b in &mut batches {
                        as_cashier(b, staffed);
                    }
                    batches
                },
                |batches| {
                    let requests: Vec<(&MutationBatch, &str)> =
                        batches.iter().map(|b| (b, "bench")).collect();
                    for answer in store.apply_group(black_box(&requests)) {
                        answer.unwrap();
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
}

fn benches(c: &mut Criterion) {
    hub_apply(c);
    let (_dir, store, ids) = hub();
    let one = vec![ids[0].clone()];
    let twenty: Vec<String> = ids[..20].to_vec();

    c.bench_function("pick parts: 1 order, status", |b| {
        b.iter(|| {
            store
                .pull_many("order", black_box(&one), Some("status"))
                .unwrap()
        })
    });
    c.bench_function("pick parts: 1 order, all parts (legacy row)", |b| {
        b.iter(|| store.pull_many("order", black_box(&one), None).unwrap())
    });
    c.bench_function("pick parts: 20 orders, status+totals", |b| {
        b.iter(|| {
            store
                .pull_many("order", black_box(&twenty), Some("status,totals"))
                .unwrap()
        })
    });

    let capsule = store.capsules_since(0, 1).unwrap().remove(0);
    c.bench_function("encode capsule frame", |b| {
        b.iter(|| {
            serde_json::to_string(&Frame::Capsule {
                seq: capsule.seq,
                capsule: black_box(capsule.capsule.clone()),
            })
            .unwrap()
        })
    });
    let rows = store.pull_many("order", &one, None).unwrap();
    c.bench_function("encode legacy rows frame (1 order)", |b| {
        b.iter(|| {
            serde_json::to_string(&Frame::Rows {
                seq: 1,
                from: 1,
                ts: 0,
                rows: vec![black_box(rows.clone())],
            })
            .unwrap()
        })
    });
    let text = serde_json::to_string(&Frame::Capsule {
        seq: capsule.seq,
        capsule: capsule.capsule.clone(),
    })
    .unwrap();
    c.bench_function("decode capsule frame", |b| {
        b.iter(|| serde_json::from_str::<Frame>(black_box(&text)).unwrap())
    });

    // Merge into a replica: a fresh pull merged, then the same pull again (stale, skipped).
    let rdir = tempfile::tempdir().unwrap();
    let replica = Store::open(
        rdir.path().join("replica.sqlite3"),
        Arc::new(Schema::builtin()),
    )
    .unwrap();
    replica.load_snapshot(&store.snapshot().unwrap()).unwrap();
    let status = store.pull_many("order", &one, Some("status")).unwrap();
    c.bench_function("merge: 1 order, status, already current", |b| {
        b.iter(|| replica.merge_pulled(black_box(&status)).unwrap())
    });
    let mut newer = store
        .pull_many("order", &twenty, Some("status,totals,lines"))
        .unwrap();
    let mut bump = 1_000_000;
    c.bench_function("merge: 20 orders, status+totals+lines, newer", |b| {
        b.iter(|| {
            // Each iteration presents newer versions so the merge really writes.
            bump += 1;
            for item in &mut newer.items {
                for v in item.pv.values_mut() {
                    *v = bump;
                }
                item.v = bump;
            }
            replica.merge_pulled(black_box(&newer)).unwrap()
        })
    });
}

criterion_group! {
    name = core;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2));
    targets = benches
}
criterion_main!(core);
