//! Copying the shop's history behind a day snapshot, page by page from the followed hub, while
//! the node already sells and follows the stream. Each page is merged by the store under the
//! rules of every merge (`Store::merge_backfill`); until the last one the node may not lead.

use std::convert::Infallible;
use std::time::Duration;

use capsule_protocol::BackfillPage;

use crate::follow::{Ctx, blocking, get_json};
use crate::{ReplicaError, Result};

/// Entities asked for per page unless configured: about 200 KB of JSON for orders with their
/// lines.
pub const HISTORY_PAGE: u16 = 200;
/// After a page that failed (the hub busy or gone), the next try waits this long; the session
/// beside it notices a hub that is gone and starts over with the next one.
const RETRY: Duration = Duration::from_secs(2);

/// Runs for as long as the session it sits beside: copies pages while the history is not whole,
/// waits for the session to settle on a hub's data first and again after every snapshot.
pub(crate) async fn copy_history(ctx: &Ctx<'_>) -> Infallible {
    loop {
        ctx.settled.notified().await;
        if ctx.config.light {
            continue; // a light till keeps open business only, by choice
        }
        loop {
            match next_page(ctx).await {
                Ok(true) => tokio::task::yield_now().await,
                Ok(false) => break,
                Err(ReplicaError::Hub { status: 404, .. }) => {
                    // A hub older than the history copy: the next snapshot (whole) ends it.
                    tracing::warn!("the hub cannot page its history; this node waits to lead");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "copying the shop's history paused");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

/// Fetches and merges the next page; false when the history is whole.
async fn next_page(ctx: &Ctx<'_>) -> Result<bool> {
    let s = ctx.store.clone();
    let Some(at) = blocking(move || s.backfill_at()).await? else {
        return Ok(false);
    };
    let mut url = format!(
        "{}/api/backfill?entity={}&limit={}",
        ctx.config.hub_url, at.entity, ctx.config.history_page
    );
    if let Some(after) = &at.after {
        url.push_str(&format!("&after={after}"));
    }
    let page: BackfillPage = get_json(ctx, &url).await?;
    let s = ctx.store.clone();
    let merged = blocking(move || s.merge_backfill(&at, &page)).await?;
    if merged {
        ctx.metrics.history_pages.inc();
    }
    Ok(true)
}
