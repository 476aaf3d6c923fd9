//! A till tells its hub, every few seconds, how its sync is doing (state, position, pull and
//! merge latency, end-to-end lag), so the manager sees every node on the hub dashboard.

use std::sync::Arc;
use std::time::Duration;

use capsule_protocol::NodeReport;

use crate::{HubTarget, Link, ReplicaMetrics};

pub const REPORT_EVERY: Duration = Duration::from_secs(2);

/// Reports for ever; a hub that is away simply misses reports.
pub async fn report(
    target: HubTarget,
    node_id: String,
    role: &'static str,
    link: Link,
    metrics: Arc<ReplicaMetrics>,
    peers: crate::PeerClient,
) {
    let mut tick = tokio::time::interval(REPORT_EVERY);
    loop {
        tick.tick().await;
        let Some(hub) = target.peek() else { continue };
        let url = format!("{}/api/nodes/report", peers.base(&hub));
        let body = NodeReport {
            node_id: node_id.clone(),
            role: role.into(),
            state: Some(link.get().state.as_str().into()),
            replica: serde_json::to_value(metrics.to_json()).ok(),
        };
        if let Err(e) = peers
            .http()
            .post(&url)
            .timeout(Duration::from_secs(5))
            .json(&body)
            .send()
            .await
        {
            tracing::debug!(error = %e, "could not report to the hub");
        }
    }
}
