//! The arbiter's fleet view against a balancer whose kernel refuses its IPVS work: lb2 runs
//! without CAP_NET_ADMIN, so every change it makes fails. Its row lags the arbiter's tree
//! serial and announces nothing, lb1's is current; each row says what that balancer's own
//! `/status` says, and the router holds lb1's path only.

use serde_json::Value;

use crate::guest::{Guest, VIP4};
use crate::{within, CHANGE, START};

#[test]
#[ignore = "vm: needs the IPVS kernel, a broker and a router on the host; run netns-lab/vm-e2e"]
fn vm_e2e_the_fleet_view_shows_a_balancer_whose_ipvs_work_fails_lagging() {
    let g = Guest::start_with("fleet", &[1], |_, _| labkit::Ini::new());
    assert!(
        within(START, || g.mirrors(&g.lbs[0])),
        "lb1 does not mirror: {}",
        g.mirror_diff()
    );
    g.ok("lb1 mirrors the arbiter's tree; lb2 (no CAP_NET_ADMIN) cannot");
    for arg in ["b-150,80", "b-150,443", "b-150,53"] {
        let out = g.quorum("up", &format!("{VIP4},{arg}"));
        assert!(out.status.success(), "{out:?}");
    }
    let prefix = format!("{VIP4}/32");
    assert!(
        within(CHANGE, || g
            .router_paths(&prefix)
            .iter()
            .any(|p| p.0 == "192.0.2.11")),
        "lb1 never announced {prefix}: {:?}",
        g.router_paths(&prefix)
    );
    // One change of the arbiter's tree: lb1 follows, lb2 falls one more behind.
    g.arb
        .run(
            "ipvsadm",
            &[
                "-e",
                "-t",
                "203.0.113.10:80",
                "-r",
                "203.0.113.101:80",
                "-g",
                "-w",
                "11",
            ],
        )
        .unwrap();
    let row = |doc: &Value, name: &str| -> Value {
        doc["clients"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let settled = |doc: &Value| {
        let serial = doc["tree_serial"].as_u64().unwrap_or(0);
        let (lb1, lb2) = (row(doc, "lb1"), row(doc, "lb2"));
        serial >= 1
            && lb1["serial"].as_u64() == Some(serial)
            && lb1["announced"] == 1
            && lb2["live"] == true
            && lb2["lag"].as_u64().is_some_and(|l| l >= 2)
    };
    let mut doc = Value::Null;
    assert!(
        within(CHANGE, || {
            doc = g.status_json(None);
            settled(&doc) && g.mirrors(&g.lbs[0])
        }),
        "the fleet view never showed lb1 current and lb2 lagging:\n{doc:#}\n{}",
        g.mirror_diff()
    );
    for (i, name) in [(0, "lb1"), (1, "lb2")] {
        // The arbiter's row comes from the balancer's last heartbeat (once a second), so the
        // two documents are read again until they agree, as they do once nothing changes.
        let (mut r, mut own) = (Value::Null, Value::Null);
        let announced_of = |own: &Value| {
            own["vips"].as_array().map_or(0, |v| {
                v.iter().filter(|v| v["state"] == "announced").count()
            })
        };
        let agree = within(CHANGE, || {
            doc = g.status_json(None);
            own = g.status_json(Some(i));
            r = row(&doc, name);
            r["serial"].as_u64() == own["tree_serial"].as_u64()
                && r["announced"].as_u64() == Some(announced_of(&own) as u64)
        });
        assert!(
            agree,
            "{name}: the fleet view's row is not what the balancer says of itself:\n{r:#}\n{own:#}"
        );
        g.ok(&format!(
            "{name}: fleet row serial {} (arbiter {}, lag {}), announced {} — as its own /status says",
            r["serial"], doc["tree_serial"], r["lag"], r["announced"]
        ));
    }
    let paths = g.router_paths(&prefix);
    assert!(
        paths.len() == 1 && paths[0].0 == "192.0.2.11",
        "the router should hold lb1's path only: {paths:?}"
    );
    g.ok("router: the VIP from lb1 only");
    eprintln!("{}", g.arbiter_status_text());
    g.finish();
}
