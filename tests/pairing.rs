//! Pairing a device with the code another shows, with real `tilld` processes: the right code
//! pairs once and puts both devices in the shop's roster; a wrong one pairs nobody and writes
//! nothing; five tries close the code.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;

fn pair(hub: &Node, code: &str, data: &Path, name: &str) -> Output {
    pair_device(hub, code, data, name, "till")
}

fn roster(hub: &Node) -> Vec<serde_json::Value> {
    hub.get("/api/tables/device").1["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A code that is not `code`.
fn other_than(code: &str, k: u32) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1 + k) % 1_000_000)
}

#[test]
fn the_right_code_pairs_a_device_once_and_both_are_in_the_roster() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let hub_id = status(&hub)["device_id"].as_str().unwrap().to_string();
    let till_data = dir.path().join("till");

    let code = new_code(&hub);
    let wrong = pair(&hub, &other_than(&code, 0), &till_data, "Till 2");
    assert_eq!(wrong.status.code(), Some(3), "{wrong:?}");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("does not match"));
    assert!(roster(&hub).is_empty(), "a wrong code wrote the roster");

    let right = pair(&hub, &code, &till_data, "Till 2");
    assert!(right.status.success(), "{right:?}");
    assert!(String::from_utf8_lossy(&right.stdout).contains("paired with"));
    let rows = roster(&hub);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let till_row = rows.iter().find(|r| r["id"] != hub_id.as_str()).unwrap();
    assert_eq!(till_row["name"], "Till 2");
    assert_eq!(till_row["role"], "till");
    assert_eq!(till_row["paired_by"], hub_id.as_str());
    assert!(
        till_row["cert"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    // The device id the roster holds is the one the till runs with later.
    let till = Node::till(&till_data, &hub);
    assert_eq!(status(&till)["device_id"], till_row["id"]);

    // Single use.
    let again = pair(&hub, &code, &dir.path().join("other"), "Till 3");
    assert_eq!(again.status.code(), Some(3), "{again:?}");
    assert_eq!(roster(&hub).len(), 2);
}

#[test]
fn five_wrong_codes_close_the_code_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let code = new_code(&hub);
    let guest = dir.path().join("guest");
    for k in 0..5 {
        let out = pair(&hub, &other_than(&code, k), &guest, "Guest phone");
        assert_eq!(out.status.code(), Some(3), "{out:?}");
    }
    let late = pair(&hub, &code, &guest, "Guest phone");
    assert_eq!(late.status.code(), Some(3), "{late:?}");
    assert!(
        String::from_utf8_lossy(&late.stderr).contains("too many"),
        "{late:?}"
    );
    assert!(roster(&hub).is_empty());
    // Nothing is open to try any more; a new code is needed, and then works.
    assert_eq!(hub.get("/api/pair").0, 410);
    let fresh = new_code(&hub);
    assert!(pair(&hub, &fresh, &guest, "Till 4").status.success());
    assert_eq!(roster(&hub).len(), 2);
}

/// A guest with `curl` cannot write the roster: a row must be a whole save, name its own key,
/// and carry the signature of a live hub-eligible member (or its own, for the first device only).
#[test]
fn the_roster_takes_only_rows_signed_by_a_member_that_may_change_it() {
    use capsule_trust::{Identity, roster};
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let hub_id = status(&hub)["device_id"].clone();
    let till_data = dir.path().join("till");
    assert!(
        pair(&hub, &new_code(&hub), &till_data, "Till 2")
            .status
            .success()
    );
    assert_eq!(roster(&hub).len(), 2);
    let till = Identity::load_or_create(&till_data).unwrap();
    let guest = Identity::load_or_create(&dir.path().join("guest")).unwrap();
    let row = |of: &Identity, role: &str| {
        let mut r = serde_json::Map::new();
        r.insert("id".into(), of.device_id().to_string().into());
        r.insert("name".into(), "Guest laptop".into());
        r.insert("role".into(), role.into());
        r.insert("cert".into(), of.cert_pem().into());
        r.insert(
            "public_key".into(),
            roster::encode(&of.public_key_der()).into(),
        );
        r.insert("paired_at".into(), "2026-12-07T12:00:00.000Z".into());
        r
    };
    let write = |action: &str, r: &serde_json::Map<String, serde_json::Value>| {
        hub.mutate(&[("device", action, serde_json::Value::Object(r.clone()))])
    };
    // Signed by itself, though the roster is started.
    let mut own = row(&guest, "hub-eligible");
    roster::sign_row(&guest, &mut own);
    let (code, answer) = write("save", &own);
    assert_eq!(code, 400, "{answer}");
    assert!(answer.to_string().contains("first device"), "{answer}");
    // Signed by a till: a till may not add devices.
    let mut by_till = row(&guest, "hub-eligible");
    roster::sign_row(&till, &mut by_till);
    let (code, answer) = write("save", &by_till);
    assert_eq!(code, 400, "{answer}");
    // A till promoting itself, its row re-signed by itself.
    let mut promoted = row(&till, "hub-eligible");
    roster::sign_row(&till, &mut promoted);
    assert_eq!(write("save", &promoted).0, 400);
    // A forged signature and a bare merge.
    let mut forged = row(&guest, "till");
    roster::sign_row(&guest, &mut forged);
    forged.insert("signed_by".into(), hub_id.clone());
    assert_eq!(write("save", &forged).0, 400);
    let till_id = till.device_id().to_string();
    let (code, _) = hub.mutate(&[(
        "device",
        "merge",
        serde_json::json!({"id": till_id, "revoked_at": "2026-12-07T12:00:00.000Z"}),
    )]);
    assert_eq!(code, 400);
    let rows = roster(&hub);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r["revoked_at"].is_null()));
    assert!(
        rows.iter()
            .any(|r| r["id"] == till_id.as_str() && r["role"] == "till")
    );
}

/// Two devices typing the same code at the same moment: one is paired, the other refused.
#[test]
fn two_devices_racing_for_one_code_pair_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let code = new_code(&hub);
    let racers: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tilld"));
            cmd.args(["pair", "--code", &code, "--peer", &hub.url, "--name", n])
                .arg("--data")
                .arg(dir.path().join(n))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let outcomes: Vec<Output> = racers
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let won = outcomes.iter().filter(|o| o.status.success()).count();
    assert_eq!(won, 1, "{outcomes:?}");
    let lost = outcomes.iter().find(|o| !o.status.success()).unwrap();
    assert_eq!(lost.status.code(), Some(3), "{lost:?}");
    assert_eq!(roster(&hub).len(), 2, "the host and the one that won");
}

/// A relay between the new device and the host (a separate process): relaying as is, it only
/// carries an exchange it cannot read, and the real device is paired; putting its own device id
/// in place of the joiner's, it makes the key confirmation fail and nobody is paired.
#[test]
fn a_relaying_man_in_the_middle_cannot_pair_itself() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::hub(&dir.path().join("hub"));
    let relay = |attacker: Option<&str>| {
        let mut cmd = std::process::Command::new("python3");
        cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/proxy/relay.py"))
            .arg(&hub.url);
        if let Some(a) = attacker {
            cmd.arg(a);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the relay");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = line.trim().rsplit(' ').next().unwrap().to_string();
        (child, format!("http://127.0.0.1:{port}"))
    };
    let pair_via = |peer: &str, data: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tilld"))
            .args([
                "pair",
                "--code",
                &new_code(&hub),
                "--peer",
                peer,
                "--name",
                "Till 2",
            ])
            .arg("--data")
            .arg(data)
            .output()
            .unwrap()
    };
    // The attacker's own device id in the messages.
    let attacker = capsule_trust::Identity::load_or_create(&dir.path().join("attacker")).unwrap();
    let (mut mitm, url) = relay(Some(attacker.device_id().as_str()));
    let out = pair_via(&url, &dir.path().join("victim"));
    let _ = mitm.kill();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(roster(&hub).is_empty(), "nobody paired: {:?}", roster(&hub));

    // Relayed as is: the real device is paired, under its own id.
    let (mut plain, url) = relay(None);
    let till = dir.path().join("till");
    let out = pair_via(&url, &till);
    let _ = plain.kill();
    assert!(out.status.success(), "{out:?}");
    let till_id = capsule_trust::Identity::load_or_create(&till).unwrap();
    let rows = roster(&hub);
    assert!(rows.iter().any(|r| r["id"] == till_id.device_id().as_str()));
    assert!(
        !rows
            .iter()
            .any(|r| r["id"] == attacker.device_id().as_str())
    );
}
