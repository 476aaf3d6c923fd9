//! Node routes beyond the shared API: cashier commands, printing, X/Z reports and a till's
//! outbox.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use capsule_protocol::{ErrorBody, MutationBatch, Outbox as Outbox_};
use capsule_replica::Outbox;
use capsule_server::staff::Stamp;
use capsule_server::{ApiError, MutationHandler};
use capsule_store::{Report, Store};
use serde::Deserialize;
use serde_json::{Value, json};

/// The OpenAPI description of the node's own routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        openapi_json,
        outbox_list,
        outbox_retry,
        outbox_discard,
        send_to_kitchen,
        print_receipt,
        reprint_tickets,
        print_jobs,
        print_retry,
        print_test,
        x_report,
        find_orders,
        z_list,
        z_get,
        take_z,
        print_x,
        print_z
    ),
    components(schemas(
        PrintRequest,
        TakeZ,
        Report,
        crate::printing::Queued,
        Outbox_,
        ErrorBody,
        capsule_store::OrderPage,
        capsule_store::OrderHit
    ))
)]
pub struct NodeApiDoc;

/// Every route a node serves, described: the shared API and the node's own.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    let mut doc = capsule_server::api::ApiDoc::openapi();
    doc.merge(NodeApiDoc::openapi());
    // What the guard and the framework answer before a route runs, on every operation.
    for item in doc.paths.paths.values_mut() {
        let ops = [
            (&mut item.get, false),
            (&mut item.post, true),
            (&mut item.put, true),
            (&mut item.delete, true),
            (&mut item.patch, true),
        ];
        for (op, changes_state) in ops {
            let Some(op) = op.as_mut() else { continue };
            let mut add = |code: &str, why: &str| {
                op.responses
                    .responses
                    .entry(code.into())
                    .or_insert_with(|| {
                        utoipa::openapi::ResponseBuilder::new()
                            .description(why)
                            .content(
                                "application/json",
                                utoipa::openapi::ContentBuilder::new()
                                    .schema(Some(utoipa::openapi::Ref::from_schema_name(
                                        "ErrorBody",
                                    )))
                                    .build(),
                            )
                            .into()
                    });
            };
            add(
                "403",
                "refused: sent to a name that is not this node's, or from another site's page",
            );
            if changes_state {
                add("413", "the body is too large");
                add(
                    "415",
                    "the body is not JSON (Content-Type: application/json)",
                );
            }
        }
    }
    doc.info.title = "Capsule POS node API".into();
    doc.info.description = Some(
        "Every node (hub, till, kitchen screen) serves this API on the shop's LAN. Errors are \
         always a JSON body `{\"error\": \"...\"}` with a 4xx or 5xx status."
            .into(),
    );
    doc
}

#[derive(Clone)]
struct CommandState {
    store: Arc<Store>,
    mutations: MutationHandler,
    /// A till's outbox drain, woken when the manager retries a refused write.
    outbox: Option<Arc<Outbox>>,
    /// This node's print sender, woken when a job is queued.
    print_wake: Arc<crate::printing::PrintDesk>,
}

pub fn router(
    store: Arc<Store>,
    mutations: MutationHandler,
    outbox: Option<Arc<Outbox>>,
    print_wake: Arc<crate::printing::PrintDesk>,
) -> Router {
    // The printers' states go through this router's write path (the node's current one).
    print_wake.set_writer(mutations.clone());
    Router::new()
        .route("/api/orders", get(find_orders))
        .route("/api/orders/{id}/send-to-kitchen", post(send_to_kitchen))
        .route("/api/orders/{id}/timeline", get(order_timeline))
        .route("/api/audit", get(audit))
        .route("/api/orders/{id}/receipt", post(print_receipt))
        .route("/api/batches/{id}/tickets", post(reprint_tickets))
        .route("/api/print/jobs", get(print_jobs))
        .route("/api/print/jobs/{id}/retry", post(print_retry))
        .route("/api/printers/{id}/test", post(print_test))
        .route("/api/reports/x", get(x_report))
        .route("/api/reports/x/print", post(print_x))
        .route("/api/reports/z", get(z_list).post(take_z))
        .route("/api/reports/z/{number}", get(z_get))
        .route("/api/reports/z/{number}/print", post(print_z))
        .route("/api/openapi.json", get(openapi_json))
        .route("/api/outbox", get(outbox_list))
        .route("/api/outbox/{mid}/retry", post(outbox_retry))
        .route("/api/outbox/{mid}/discard", post(outbox_discard))
        .with_state(CommandState {
            store,
            mutations,
            outbox,
            print_wake,
        })
}

/// `GET /api/openapi.json`: this document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "node",
    responses((status = 200, description = "the OpenAPI 3 description of every route", body = Object)))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

/// `GET /api/outbox[?limit=N]`: what this node still owes the hub, and what the hub refused:
/// the oldest `limit` (1..=1000, default 500) of each, and how many there are in all.
#[utoipa::path(get, path = "/api/outbox", tag = "till",
    params(("limit" = Option<u32>, Query, description = "entries of each kind, 1..=1000 (default 500)")),
    responses((status = 200, body = Outbox_), (status = 400, body = ErrorBody)))]
async fn outbox_list(
    State(s): State<CommandState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Outbox_>, ApiError> {
    let limit = capsule_server::api::limit_param(&q, 500, 1000)?;
    let store = s.store.clone();
    let ((pending, rejected), (pending_total, rejected_total)) =
        tokio::task::spawn_blocking(move || {
            Ok::<_, capsule_store::StoreError>((store.outbox_page(limit)?, store.outbox_counts()?))
        })
        .await??;
    Ok(Json(Outbox_ {
        pending,
        rejected,
        pending_total,
        rejected_total,
    }))
}

/// Puts a refused write back in line (the manager fixed what the hub objected to).
#[utoipa::path(post, path = "/api/outbox/{mid}/retry", tag = "till", params(("mid" = String, Path)),
    responses((status = 200, description = "`{requeued}`", body = Object), (status = 400, body = ErrorBody)))]
async fn outbox_retry(
    State(s): State<CommandState>,
    Path(mid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = s.store.clone();
    let n = tokio::task::spawn_blocking(move || store.outbox_retry(&mid)).await??;
    if let Some(o) = &s.outbox {
        o.wake();
    }
    Ok(Json(json!({ "requeued": n })))
}

/// Drops a refused write for good.
#[utoipa::path(post, path = "/api/outbox/{mid}/discard", tag = "till", params(("mid" = String, Path)),
    responses((status = 200, description = "`{discarded}`", body = Object), (status = 400, body = ErrorBody)))]
async fn outbox_discard(
    State(s): State<CommandState>,
    stamp: Stamp,
    Path(mid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    stamp.require(&s.store, "outbox.discard").await?;
    let store = s.store.clone();
    let n = tokio::task::spawn_blocking(move || store.outbox_discard(&mid)).await??;
    Ok(Json(json!({ "discarded": n })))
}

/// Plans from this node's data, then submits through the node's own mutation path (applied
/// on the hub, forwarded from a till).
#[utoipa::path(post, path = "/api/orders/{id}/send-to-kitchen", tag = "orders", params(("id" = String, Path)),
    responses((status = 200, description = "`{batch_id, results, print}`", body = Object),
              (status = 404, body = ErrorBody), (status = 409, description = "no new lines to send", body = ErrorBody),
              (status = 503, body = ErrorBody)))]
async fn send_to_kitchen(
    State(s): State<CommandState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    stamp: Stamp,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = s.store.clone();
    let (batch, mutations) =
        tokio::task::spawn_blocking(move || store.plan_send_to_kitchen(&id)).await??;
    let mut request = MutationBatch {
        mutations,
        source: None,
    };
    stamp.apply(&mut request);
    let answer = (s.mutations)(request, peer.ip().to_string()).await?;
    // One ticket per station; a retried send prints nothing twice (the job ids name the
    // round). A printer problem never fails the send: the round is in the kitchen's screens.
    let store = s.store.clone();
    let b = batch.clone();
    let printed =
        tokio::task::spawn_blocking(move || crate::printing::queue_kitchen(&store, &b, None))
            .await?
            .unwrap_or_else(|e| crate::printing::Queued {
                skipped: vec![e.to_string()],
                ..Default::default()
            });
    s.print_wake.notify_one();
    Ok(Json(
        json!({ "batch_id": batch, "results": answer.results, "print": printed }),
    ))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PrintRequest {
    /// A reprint: the caller's id for this request (a retry with the same id prints once).
    /// Left out: the first print, which is never repeated.
    request_id: Option<String>,
}

fn print_request(
    body: Result<Json<PrintRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Option<String>, ApiError> {
    let Json(r) =
        body.map_err(|e| ApiError::bad_request(format!("print request: {}", e.body_text())))?;
    match r.request_id {
        Some(id) if id.is_empty() || id.len() > 128 => {
            Err(ApiError::bad_request("request_id is 1 to 128 characters"))
        }
        other => Ok(other),
    }
}

/// Queues print jobs on a blocking thread, then wakes the node's print sender.
async fn queue_and_wake(
    s: &CommandState,
    queue: impl FnOnce(&Store) -> capsule_store::Result<crate::printing::Queued> + Send + 'static,
) -> Result<Json<crate::printing::Queued>, ApiError> {
    let store = s.store.clone();
    let q = tokio::task::spawn_blocking(move || queue(&store)).await??;
    s.print_wake.notify_one();
    Ok(Json(q))
}

/// `POST /api/orders/{id}/receipt` `{"request_id"?}`: the order's receipt on this till's
/// receipt printer (a cash payment opens the drawer).
#[utoipa::path(post, path = "/api/orders/{id}/receipt", tag = "printing", params(("id" = String, Path)),
    request_body = PrintRequest,
    responses((status = 200, body = crate::printing::Queued), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn print_receipt(
    State(s): State<CommandState>,
    Path(id): Path<String>,
    body: Result<Json<PrintRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<crate::printing::Queued>, ApiError> {
    let request = print_request(body)?;
    queue_and_wake(&s, move |store| {
        crate::printing::queue_receipt(store, &id, request.as_deref())
    })
    .await
}

/// `POST /api/batches/{id}/tickets` `{"request_id"}`: the round's kitchen tickets again,
/// marked as a reprint.
#[utoipa::path(post, path = "/api/batches/{id}/tickets", tag = "printing", params(("id" = String, Path)),
    request_body = PrintRequest,
    responses((status = 200, body = crate::printing::Queued), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn reprint_tickets(
    State(s): State<CommandState>,
    Path(id): Path<String>,
    body: Result<Json<PrintRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<crate::printing::Queued>, ApiError> {
    let request = print_request(body)?
        .ok_or_else(|| ApiError::bad_request("a reprint needs its request_id"))?;
    queue_and_wake(&s, move |store| {
        crate::printing::queue_kitchen(store, &id, Some(&request))
    })
    .await
}

/// `GET /api/print/jobs`: this node's latest print jobs and where each stands.
#[utoipa::path(get, path = "/api/print/jobs", tag = "printing",
    responses((status = 200, description = "`{jobs}`: this node's latest print jobs", body = Object)))]
async fn print_jobs(State(s): State<CommandState>) -> Result<Json<Value>, ApiError> {
    let store = s.store.clone();
    let jobs = tokio::task::spawn_blocking(move || store.print_jobs(100)).await??;
    Ok(Json(json!({ "jobs": jobs })))
}

/// `POST /api/print/jobs/{id}/retry`: tries a job that has not printed again now (the
/// cashier's Retry once the printer is back); it prints once however often it is retried.
#[utoipa::path(post, path = "/api/print/jobs/{id}/retry", tag = "printing", params(("id" = String, Path)),
    responses((status = 200, description = "`{retried: id}`", body = Object),
              (status = 404, description = "no such job waiting (it printed, or never was)", body = ErrorBody)))]
async fn print_retry(
    State(s): State<CommandState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = s.store.clone();
    let job = id.clone();
    let found = tokio::task::spawn_blocking(move || store.print_retry_now(&job)).await??;
    if !found {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no print job '{id}' is waiting (it printed, or never was)"),
        ));
    }
    s.print_wake.notify_one();
    Ok(Json(json!({ "retried": id })))
}

/// `POST /api/printers/{id}/test` `{"request_id"}`: a test page on that printer (needs
/// `settings.edit` in a shop with staff).
#[utoipa::path(post, path = "/api/printers/{id}/test", tag = "printing", params(("id" = String, Path)),
    request_body = PrintRequest,
    responses((status = 200, body = crate::printing::Queued), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn print_test(
    State(s): State<CommandState>,
    stamp: Stamp,
    Path(id): Path<String>,
    body: Result<Json<PrintRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<crate::printing::Queued>, ApiError> {
    stamp.require(&s.store, "settings.edit").await?;
    let request = print_request(body)?
        .ok_or_else(|| ApiError::bad_request("a test print needs its request_id"))?;
    queue_and_wake(&s, move |store| {
        crate::printing::queue_test(store, &id, &request)
    })
    .await
}

#[derive(Deserialize)]
struct ReportFormat {
    /// `csv` for a spreadsheet, `pdf` for an A4 report, `slip` for the printed slip as a
    /// PDF; JSON otherwise.
    format: Option<String>,
}

/// Renders off the async workers: a PDF shapes every line (the slip rasterises it).
async fn report_response(r: Report, format: ReportFormat) -> Result<Response, ApiError> {
    tokio::task::spawn_blocking(move || render_report(r, &format)).await?
}

/// A Z taken before the shop had a time zone setting is shown in the zone it has now (as the
/// screens show it), not in UTC.
fn with_shop_zone(store: &Store, mut r: Report) -> Report {
    if r.time_zone.is_none() {
        r.time_zone = store
            .table_rows("shop_settings")
            .ok()
            .and_then(|rows| rows.into_iter().next())
            .and_then(|row| {
                row.get("time_zone")
                    .and_then(Value::as_str)
                    .map(String::from)
            });
    }
    r
}

fn render_report(r: Report, format: &ReportFormat) -> Result<Response, ApiError> {
    match format.format.as_deref() {
        None | Some("json") => Ok(Json(r).into_response()),
        Some("csv") => {
            let name = match r.number {
                Some(n) => format!("z-report-{n}.csv"),
                None => "x-report.csv".into(),
            };
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{name}\""),
                    ),
                ],
                // A byte-order mark: Excel reads the file as UTF-8 (Arabic names intact).
                format!("\u{feff}{}", r.to_csv()),
            )
                .into_response())
        }
        Some("pdf") => {
            let name = match r.number {
                Some(n) => format!("z-report-{n}.pdf"),
                None => "x-report.pdf".into(),
            };
            // An A4 report with real text (searchable, Arabic shaped), for the manager's desk.
            let bytes = capsule_print::report_pdf(&report_sheet(&r))
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            Ok(pdf_response(&name, bytes))
        }
        Some("slip") => {
            let name = match r.number {
                Some(n) => format!("z-report-{n}-slip.pdf"),
                None => "x-report-slip.pdf".into(),
            };
            // The slip the receipt printer prints, as a picture of the 80 mm paper.
            let bytes = capsule_print::encode(&crate::printing::report_blocks(&r))
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            let elements = capsule_print::decode(&bytes)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
            Ok(pdf_response(&name, capsule_print::render_pdf(&elements)))
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "format '{other}' is not one of json, csv, pdf, slip"
        ))),
    }
}

fn pdf_response(name: &str, bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/pdf".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// The report's figures as the A4 PDF takes them (the print crate does not know the store).
fn report_sheet(r: &Report) -> capsule_print::ReportSheet {
    use capsule_print::{SheetMethod, SheetSales, SheetShift, SheetStaff};
    let sales = |rows: &[capsule_store::SalesRow]| -> Vec<SheetSales> {
        rows.iter()
            .map(|x| SheetSales {
                name_en: x.name_en.clone(),
                name_ar: x.name_ar.clone(),
                qty: x.qty,
                amount: x.amount,
            })
            .collect()
    };
    capsule_print::ReportSheet {
        number: r.number,
        shop: r.shop.clone().unwrap_or_default(),
        taken_at: r.taken_at.clone(),
        time_zone: r.time_zone.clone(),
        taken_by: r.taken_by.clone(),
        currency: r.currency.clone().unwrap_or_default(),
        currency_digits: u32::try_from(r.currency_digits.clamp(0, 3)).unwrap_or(2),
        orders: r.orders,
        guests: r.guests,
        items: r.items,
        gross_sales: r.gross_sales,
        discounts: r.discounts,
        net_sales: r.net_sales,
        service: r.service,
        tax: r.tax,
        total: r.total,
        paid: r.paid,
        by_method: (r.by_method.iter())
            .map(|m| SheetMethod {
                method: m.method.clone(),
                count: m.count,
                amount: m.amount,
            })
            .collect(),
        void_orders: r.void_orders,
        void_orders_amount: r.void_orders_amount,
        void_lines: r.void_lines,
        void_lines_amount: r.void_lines_amount,
        open_orders: r.open_orders,
        open_orders_amount: r.open_orders_amount,
        by_category: sales(&r.by_category),
        by_item: sales(&r.by_item),
        shifts: (r.shifts.iter())
            .map(|s| SheetShift {
                cashier: s.cashier.clone(),
                opened_at: s.opened_at.clone(),
                closed_at: s.closed_at.clone(),
                opening_float: s.opening_float,
                cash_sales: s.cash_sales,
                card_sales: s.card_sales,
                expected_cash: s.expected_cash,
                counted_cash: s.counted_cash,
                difference: s.difference,
            })
            .collect(),
        staff: (r.by_staff.iter())
            .map(|p| SheetStaff {
                name: p.name.clone(),
                name_ar: p.name_ar.clone(),
                payments: p.payments,
                amount: p.amount,
                worked_s: p.worked_s,
                break_s: p.break_s,
                clocked_in: p.clocked_in,
            })
            .collect(),
    }
}

/// `GET /api/reports/x`: the shift so far (since the last Z), from this node's data.
#[utoipa::path(get, path = "/api/reports/x", tag = "reports",
    params(("format" = Option<String>, Query, description = "json (default), csv, pdf (A4) or slip (the printed slip as a PDF)")),
    responses((status = 200, body = Report), (status = 400, body = ErrorBody)))]
async fn x_report(
    State(s): State<CommandState>,
    Query(f): Query<ReportFormat>,
) -> Result<Response, ApiError> {
    let store = s.store.clone();
    let r = tokio::task::spawn_blocking(move || store.x_report()).await??;
    report_response(r, f).await
}

/// `GET /api/reports/z[?before=N&limit=L]`: the Z reports taken, newest first, a page at a
/// time (`next` is the `before` of the following page).
#[utoipa::path(get, path = "/api/reports/z", tag = "reports",
    params(("before" = Option<i64>, Query, description = "reports numbered below this"),
           ("limit" = Option<u32>, Query, description = "1..=100 (default 50)")),
    responses((status = 200, description = "`{reports, next?}`: number, taken_at, taken_by, orders, total", body = Object),
              (status = 400, body = ErrorBody)))]
async fn z_list(
    State(s): State<CommandState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let before = match q.get("before") {
        None => None,
        Some(b) => Some(z_number(b)?),
    };
    let limit = capsule_server::api::limit_param(&q, 50, 100)?;
    let store = s.store.clone();
    let list = tokio::task::spawn_blocking(move || store.z_reports(before, limit)).await??;
    let next = (list.len() == limit)
        .then(|| list.last().and_then(|r| r["number"].as_i64()))
        .flatten();
    Ok(Json(json!({ "reports": list, "next": next })))
}

/// `GET /api/orders?number=&from=&to=&table=&amount=&reference=&before=&limit=`: past and
/// present orders, newest opened first, a page at a time. Every condition given must hold.
#[utoipa::path(get, path = "/api/orders", tag = "orders",
    params(capsule_store::OrderQuery),
    responses((status = 200, body = capsule_store::OrderPage), (status = 400, body = ErrorBody)))]
async fn find_orders(
    State(s): State<CommandState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<capsule_store::OrderPage>, ApiError> {
    let int = |name: &str| -> Result<Option<i64>, ApiError> {
        q.get(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("'{name}' must be a whole number, got '{v}'"))
                })
            })
            .transpose()
    };
    let known = [
        "number",
        "from",
        "to",
        "table",
        "amount",
        "reference",
        "before",
        "limit",
    ];
    if let Some(k) = q.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown search parameter '{k}' (known: {})",
            known.join(", ")
        )));
    }
    let query = capsule_store::OrderQuery {
        number: int("number")?,
        from: q.get("from").cloned(),
        to: q.get("to").cloned(),
        table: q.get("table").cloned(),
        amount: int("amount")?,
        reference: q.get("reference").cloned(),
        before: q.get("before").cloned(),
        limit: int("limit")?.map(|l| usize::try_from(l).unwrap_or(0)),
    };
    let store = s.store.clone();
    Ok(Json(
        tokio::task::spawn_blocking(move || store.find_orders(&query)).await??,
    ))
}

/// `GET /api/reports/z/{number}`: a Z report exactly as it was taken.
#[utoipa::path(get, path = "/api/reports/z/{number}", tag = "reports",
    params(("number" = i64, Path, minimum = 1, maximum = 1_000_000_000), ("format" = Option<String>, Query, description = "json (default), csv, pdf (A4) or slip (the printed slip as a PDF)")),
    responses((status = 200, body = Report), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn z_get(
    State(s): State<CommandState>,
    Path(number): Path<String>,
    Query(f): Query<ReportFormat>,
) -> Result<Response, ApiError> {
    let number = z_number(&number)?;
    let store = s.store.clone();
    let r = tokio::task::spawn_blocking(move || {
        store.z_report(number).map(|r| with_shop_zone(&store, r))
    })
    .await??;
    report_response(r, f).await
}

fn z_number(text: &str) -> Result<i64, ApiError> {
    text.parse()
        .ok()
        .filter(|n| (1..=1_000_000_000).contains(n))
        .ok_or_else(|| ApiError::bad_request("a Z report number is an integer from 1"))
}

/// `POST /api/reports/x/print` `{"request_id"}`: the X report on this node's receipt printer.
#[utoipa::path(post, path = "/api/reports/x/print", tag = "reports", request_body = PrintRequest,
    responses((status = 200, body = crate::printing::Queued), (status = 400, body = ErrorBody)))]
async fn print_x(
    State(s): State<CommandState>,
    body: Result<Json<PrintRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<crate::printing::Queued>, ApiError> {
    let request =
        print_request(body)?.ok_or_else(|| ApiError::bad_request("printing needs a request_id"))?;
    queue_and_wake(&s, move |store| {
        crate::printing::queue_report(store, &store.x_report()?, &request)
    })
    .await
}

/// `POST /api/reports/z/{number}/print` `{"request_id"}`: a Z report on the receipt printer.
#[utoipa::path(post, path = "/api/reports/z/{number}/print", tag = "reports", params(("number" = i64, Path, minimum = 1, maximum = 1_000_000_000)),
    request_body = PrintRequest,
    responses((status = 200, body = crate::printing::Queued), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn print_z(
    State(s): State<CommandState>,
    Path(number): Path<String>,
    body: Result<Json<PrintRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<crate::printing::Queued>, ApiError> {
    let number = z_number(&number)?;
    let request =
        print_request(body)?.ok_or_else(|| ApiError::bad_request("printing needs a request_id"))?;
    queue_and_wake(&s, move |store| {
        crate::printing::queue_report(
            store,
            &with_shop_zone(store, store.z_report(number)?),
            &request,
        )
    })
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TakeZ {
    taken_by: Option<String>,
    /// The number the caller means to take (one more than the last it saw): a retry after a
    /// lost answer gets the Z it already took, not an empty next one.
    number: Option<i64>,
}

/// `POST /api/reports/z` `{"taken_by"?}`: closes the business day. Only the hub holds every
/// finished order up to its version, so a till refuses (409) and the manager takes it on the
/// hub's dashboard.
#[utoipa::path(post, path = "/api/reports/z", tag = "reports", request_body = TakeZ,
    responses((status = 201, description = "the Z report, as stored", body = Report),
              (status = 200, description = "a retry: the Z report `number` names was already taken, here it is", body = Report),
              (status = 400, body = ErrorBody),
              (status = 409, description = "this node is a till, or another Z took this number", body = ErrorBody),
              (status = 503, body = ErrorBody)))]
async fn take_z(
    State(s): State<CommandState>,
    stamp: Stamp,
    body: Result<Json<TakeZ>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) =
        body.map_err(|e| ApiError::bad_request(format!("Z report request: {}", e.body_text())))?;
    if s.outbox.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "a Z report is taken on the hub, which holds every finished order; this node is a till (an X report works here)",
        ));
    }
    let expected = body.number;
    let taken_by = body.taken_by.filter(|t| !t.trim().is_empty());
    if taken_by.as_ref().is_some_and(|t| t.len() > 64) {
        return Err(ApiError::bad_request("taken_by is at most 64 bytes"));
    }
    let store = s.store.clone();
    let planned = tokio::task::spawn_blocking(move || {
        if let Some(n) = expected {
            let next = store.next_z_number()?;
            if n == next - 1 && n >= 1 {
                // Already taken: the retry's answer is that Z.
                return Ok(Err(store.z_report(n)?));
            }
            if n != next {
                return Err(capsule_store::StoreError::Conflict(format!(
                    "the next Z report is #{next}, not #{n}"
                )));
            }
        }
        store.plan_z_report(taken_by.as_deref()).map(Ok)
    })
    .await??;
    let (report, m) = match planned {
        Ok(p) => p,
        Err(taken) => return Ok((StatusCode::OK, Json(taken)).into_response()),
    };
    // Taken on the hub only, where writes queue per source, not per client.
    let mut request = MutationBatch {
        mutations: vec![m],
        source: None,
    };
    stamp.apply(&mut request);
    (s.mutations)(request, String::new()).await?;
    Ok((StatusCode::CREATED, Json(report)).into_response())
}

/// `GET /api/orders/{id}/timeline`: who opened, added, sent, voided, discounted, approved and
/// paid, when, on which node (the writes of logged-in staff; a node that keeps the journal
/// holds them: the hub and the nodes that may become hub).
async fn order_timeline(
    State(s): State<CommandState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // A till that keeps no journal holds no audit: the hub answers for it (its own, possibly
    // empty, answer only when the hub is out of reach).
    if let Some(outbox) = &s.outbox
        && !s.store.follower_holds_audit()
        && capsule_protocol::validate::is_valid_id(&id)
    {
        match outbox.ask_hub(&format!("/api/orders/{id}/timeline")).await {
            Ok((status, body)) => {
                let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                return Ok((code, Json(body)).into_response());
            }
            Err(e) => tracing::info!(error = %e, "the hub cannot give an order's timeline"),
        }
    }
    let store = s.store.clone();
    let entries = tokio::task::spawn_blocking(move || store.order_timeline(&id)).await??;
    Ok(Json(json!({ "entries": entries })).into_response())
}

/// `GET /api/audit?staff=&what=&from=&to=&before=&limit=&format=csv`: the audit trail,
/// newest first, a page at a time (`next`: the `before` of the next page); CSV with a
/// byte-order mark so a spreadsheet reads Arabic names right.
async fn audit(
    State(s): State<CommandState>,
    stamp: Stamp,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    stamp.require(&s.store, "staff.edit").await?;
    let text = |k: &str| -> Result<Option<String>, ApiError> {
        match q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) if v.len() > 64 => {
                Err(ApiError::bad_request(format!("'{k}' is at most 64 bytes")))
            }
            Some(v) => Ok(Some(v.to_string())),
        }
    };
    let filter = capsule_store::audit::AuditFilter {
        staff: text("staff")?,
        what: text("what")?,
        from: text("from")?,
        to: text("to")?,
        before: match q.get("before") {
            None => None,
            Some(b) => Some(b.parse::<i64>().map_err(|_| {
                ApiError::bad_request("'before' must be a version (a whole number)")
            })?),
        },
        limit: capsule_server::api::limit_param(&q, 200, 5000)?,
    };
    let csv = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format '{other}': json or csv"
            )));
        }
    };
    let limit = filter.limit;
    let store = s.store.clone();
    let entries = tokio::task::spawn_blocking(move || store.audit_page(&filter)).await??;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.v))
        .flatten();
    if !csv {
        return Ok(Json(json!({ "entries": entries, "next": next })).into_response());
    }
    let mut out = String::from("\u{feff}at,what,staff,approver,device,table,row_id,v\r\n");
    for e in &entries {
        let cells = [
            e.at.clone().unwrap_or_default(),
            e.what.clone(),
            e.staff_name.clone().or(e.staff.clone()).unwrap_or_default(),
            e.approver_name
                .clone()
                .or(e.approver.clone())
                .unwrap_or_default(),
            e.device.clone().unwrap_or_default(),
            e.table.clone(),
            e.row_id.clone(),
            e.v.to_string(),
        ];
        let line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"audit.csv\"",
            ),
        ],
        out,
    )
        .into_response())
}

/// One CSV cell: quoted when it holds a separator, a quote or a line break; a cell a
/// spreadsheet would run as a formula starts with a quote mark.
fn csv_cell(c: &str) -> String {
    let c = if c.starts_with(['=', '+', '-', '@']) {
        format!("'{c}")
    } else {
        c.to_string()
    };
    if c.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    /// Every `$ref` names a schema the document holds: a dangling one breaks every client
    /// generated from it (a new type used only in a query parameter is easy to miss).
    #[test]
    fn every_schema_reference_in_the_openapi_document_resolves() {
        let doc = serde_json::to_value(super::openapi()).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let text = doc.to_string();
        let prefix = "\"#/components/schemas/";
        let mut refs = 0;
        for (at, _) in text.match_indices(prefix) {
            let rest = &text[at + prefix.len()..];
            let name = &rest[..rest.find('"').unwrap()];
            assert!(schemas.contains_key(name), "dangling $ref to {name}");
            refs += 1;
        }
        assert!(refs > 10, "only {refs} references: is the document whole?");
    }
}
