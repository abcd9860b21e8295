//! The pages: what each path answers, rendered from a [`PoolView`].

use std::borrow::Cow;
use std::fmt::Write;
use std::time::Duration;

use base64::Engine;

use super::view::{PoolView, SlotView};
use super::{metrics, Request, Response, TEXT};
use crate::render::{self, Columns, Row};
use crate::scoreboard::Status;

const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=utf-8";

/// The answer to `req` from `view`: `/status` (text, or HTML when the
/// client accepts it), `/status.json`, `/metrics`, `/healthz`; 404 for any
/// other path, 405 for a method other than GET and HEAD.
pub fn respond(req: &Request, view: &PoolView) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return Response::not_allowed();
    }
    match req.path {
        "/status" if req.accepts_html => page(HTML, html(view)),
        "/status" => page(TEXT, text(view)),
        "/status.json" => page(JSON, json(view)),
        "/metrics" => page(metrics::CONTENT_TYPE, metrics::render(view)),
        "/healthz" => healthz(view),
        _ => Response::text(
            404,
            "not found: this server has /status, /status.json, /metrics and /healthz\n",
        ),
    }
}

fn page(content_type: &'static str, body: String) -> Response {
    Response {
        status: 200,
        content_type,
        body: body.into_bytes(),
        allow: None,
    }
}

/// Slots with a worker.
fn live(view: &PoolView) -> usize {
    view.slots.iter().filter(|s| s.pid.is_some()).count()
}

fn healthz(view: &PoolView) -> Response {
    let live = live(view);
    if live >= view.min_workers {
        Response::text(200, "ok\n")
    } else {
        Response::text(
            503,
            format!(
                "{live} live worker(s), fewer than min_workers {} ({})\n",
                view.min_workers, view.phase
            ),
        )
    }
}

/// What the master's summary says, as `prefork status` words it.
fn summary(view: &PoolView) -> String {
    crate::render::MasterSummary {
        pid: u64::from(view.master_pid),
        phase: view.phase,
        live: live(view),
        target: view.target,
        activity: view.activity,
        bounds: view.bounds,
        restarts: view.slots.iter().map(|s| s.restarts).sum(),
        uptime: view.uptime,
        listen: &view.listen,
    }
    .line()
}

/// The counters in one line, for people.
fn counters_line(view: &PoolView) -> String {
    let c = &view.counts;
    let pairs = |v: &[(&str, u64)]| {
        v.iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "spawned {}; exits: {}; stuck kills {}; spawn failures {}; reloads: {}; output lines dropped {}; \
         scaled up {}, down {}",
        c.spawned,
        pairs(&c.exits),
        c.stuck_kills,
        c.spawn_failures,
        pairs(&c.reloads),
        c.output_dropped,
        c.grown,
        c.shrunk
    )
}

fn status_of(slot: &SlotView) -> Status {
    slot.status.clone().map_or(Status::NotYet, Status::Written)
}

/// The table of the SIGUSR1 dump and `prefork status`, for the whole pool.
fn text(view: &PoolView) -> String {
    let header = format!("scoreboard {}: {}", view.scoreboard, summary(view));
    let rows: Vec<Row> = view
        .slots
        .iter()
        .map(|s| Row {
            slot: Some(s.slot),
            id: s.pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
            uptime: s.uptime,
            since_update: s.since_update,
            restarts: Some(s.restarts),
            last_exit: s.last_exit.clone(),
            status: match s.pid {
                Some(_) => status_of(s),
                None => Status::Written(b"(no worker)".to_vec()),
            },
        })
        .collect();
    let mut out = render::table(&header, &rows, Columns::Supervisor);
    out.push_str(&counters_line(view));
    out.push('\n');
    out
}

/// `<`, `>`, `&` and quotes as entities: nothing from a worker is markup.
fn escape_html(text: &str) -> Cow<'_, str> {
    if !text.contains(['<', '>', '&', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_string(), |d| format!("{:.1}s", d.as_secs_f64()))
}

/// A small page, self-contained: no script, no outside asset.
fn html(view: &PoolView) -> String {
    let mut out = String::with_capacity(1024 + 160 * view.slots.len());
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>prefork {pid}</title>\
         <style>body{{font-family:monospace;margin:1em}}table{{border-collapse:collapse}}\
         th,td{{padding:.1em .7em;text-align:right;border-bottom:1px solid #ddd}}\
         td.s,th.s{{text-align:left;white-space:pre}}</style></head><body>\n\
         <h1>prefork master pid={pid}</h1>\n<p>{summary}</p>\n<p>scoreboard {board}</p>\n\
         <p>{counters}</p>\n<table>\n<tr><th>SLOT</th><th>STATE</th><th>PID</th><th>UPTIME</th>\
         <th>LAST-UPDATE</th><th>RESTARTS</th><th class=\"s\">LAST-EXIT</th>\
         <th class=\"s\">STATUS</th></tr>\n",
        pid = view.master_pid,
        summary = escape_html(&summary(view)),
        board = escape_html(&view.scoreboard),
        counters = escape_html(&counters_line(view)),
    );
    for s in &view.slots {
        let status = match (&s.pid, &s.status) {
            (None, _) => String::new(),
            (Some(_), None) => "(no status yet)".to_string(),
            (Some(_), Some(bytes)) => render::escape(bytes),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"s\">{}</td><td class=\"s\">{}</td></tr>",
            s.slot,
            escape_html(s.state),
            s.pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
            secs(s.uptime),
            s.since_update.map_or_else(
                || "-".to_string(),
                |d| format!("{:.1}s ago", d.as_secs_f64())
            ),
            s.restarts,
            escape_html(s.last_exit.as_deref().unwrap_or("-")),
            escape_html(&status),
        );
    }
    out.push_str("</table>\n</body></html>\n");
    out
}

#[derive(serde::Serialize)]
struct StatusJson<'a> {
    master_pid: u32,
    phase: &'a str,
    uptime_secs: f64,
    /// Configured workers, as in the master file.
    workers: usize,
    live: usize,
    min_workers: usize,
    listen: &'a [String],
    scoreboard: &'a str,
    activity: super::view::Activity,
    /// A self-sizing pool's bounds; null for a fixed pool.
    scaling: Option<super::view::Bounds>,
    counters: CountersJson<'a>,
    slots: Vec<SlotJson<'a>>,
}

#[derive(serde::Serialize)]
struct CountersJson<'a> {
    spawned: u64,
    exits: std::collections::BTreeMap<&'a str, u64>,
    stuck_kills: u64,
    spawn_failures: u64,
    reloads: std::collections::BTreeMap<&'a str, u64>,
    output_dropped: u64,
    scaled_up: u64,
    scaled_down: u64,
}

/// One slot, with `prefork status --json`'s names where they overlap.
#[derive(serde::Serialize)]
struct SlotJson<'a> {
    slot: usize,
    /// The board's name for the worker: its pid.
    id: Option<String>,
    pid: Option<i32>,
    state: &'a str,
    restarts: u64,
    last_exit: Option<&'a str>,
    uptime_secs: Option<f64>,
    age_secs: Option<f64>,
    status: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_base64: Option<String>,
}

fn json(view: &PoolView) -> String {
    let c = &view.counts;
    let doc = StatusJson {
        master_pid: view.master_pid,
        phase: view.phase,
        uptime_secs: view.uptime.as_secs_f64(),
        workers: view.target,
        live: live(view),
        min_workers: view.min_workers,
        listen: &view.listen,
        scoreboard: &view.scoreboard,
        activity: view.activity,
        scaling: view.bounds,
        counters: CountersJson {
            spawned: c.spawned,
            exits: c.exits.iter().copied().collect(),
            stuck_kills: c.stuck_kills,
            spawn_failures: c.spawn_failures,
            reloads: c.reloads.iter().copied().collect(),
            output_dropped: c.output_dropped,
            scaled_up: c.grown,
            scaled_down: c.shrunk,
        },
        slots: view
            .slots
            .iter()
            .map(|s| SlotJson {
                slot: s.slot,
                id: s.pid.map(|p| p.to_string()),
                pid: s.pid,
                state: s.state,
                restarts: s.restarts,
                last_exit: s.last_exit.as_deref(),
                uptime_secs: s.uptime.map(|d| d.as_secs_f64()),
                age_secs: s.since_update.map(|d| d.as_secs_f64()),
                status: s.status.as_deref().map(String::from_utf8_lossy),
                status_base64: s
                    .status
                    .as_deref()
                    .filter(|b| std::str::from_utf8(b).is_err())
                    .map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&doc).expect("JSON of plain values");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> PoolView {
        PoolView {
            master_pid: 77,
            phase: "running",
            target: 2,
            min_workers: 1,
            scoreboard: "/run/board".into(),
            slots: vec![
                SlotView {
                    slot: 0,
                    pid: Some(101),
                    state: "running",
                    restarts: 2,
                    last_exit: Some("signal 9".into()),
                    uptime: Some(Duration::from_secs(5)),
                    since_update: Some(Duration::from_millis(300)),
                    status: Some(b"<b>\xff\x1b[31m".to_vec()),
                },
                SlotView {
                    slot: 1,
                    state: "empty",
                    ..SlotView::default()
                },
            ],
            ..PoolView::default()
        }
    }

    fn get(path: &str, html: bool) -> Response {
        let req = Request {
            method: "GET",
            path,
            accepts_html: html,
        };
        respond(&req, &view())
    }

    fn body(r: &Response) -> String {
        String::from_utf8(r.body.clone()).unwrap()
    }

    #[test]
    fn the_text_status_escapes_like_prefork_status() {
        let r = get("/status", false);
        assert_eq!((r.status, r.content_type), (200, TEXT));
        let text = body(&r);
        assert!(
            text.contains("master pid=77 running, workers=1/2"),
            "{text}"
        );
        assert!(text.contains("<b>\\xff\\u{1b}[31m"), "{text}");
        assert!(text.contains("(no worker)"), "{text}");
    }

    #[test]
    fn the_html_status_is_escaped_and_self_contained() {
        let r = get("/status", true);
        assert_eq!(r.content_type, HTML);
        let html = body(&r);
        assert!(html.contains("&lt;b&gt;\\xff\\u{1b}[31m"), "{html}");
        assert!(!html.contains("<b>") && !html.contains("<script"), "{html}");
        assert!(!html.contains("src=") && !html.contains("href="), "{html}");
    }

    #[test]
    fn the_json_status_has_status_base64_for_bytes_that_are_not_utf8() {
        let r = get("/status.json", false);
        let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(doc["master_pid"], 77);
        assert_eq!(doc["live"], 1);
        let slot = &doc["slots"][0];
        assert_eq!(slot["pid"], 101);
        assert_eq!(slot["id"], "101");
        assert_eq!(slot["state"], "running");
        assert_eq!(slot["last_exit"], "signal 9");
        assert_eq!(slot["age_secs"], 0.3);
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(slot["status_base64"].as_str().unwrap())
                .unwrap(),
            b"<b>\xff\x1b[31m"
        );
        assert!(doc["slots"][1]["pid"].is_null());
        assert!(doc["slots"][1].get("status_base64").is_none());
    }

    #[test]
    fn healthz_counts_live_workers() {
        assert_eq!(get("/healthz", false).status, 200);
        let mut v = view();
        v.min_workers = 2;
        let req = Request {
            method: "GET",
            path: "/healthz",
            accepts_html: false,
        };
        let r = respond(&req, &v);
        assert_eq!(r.status, 503);
        assert_eq!(body(&r).lines().count(), 1);
    }

    #[test]
    fn unknown_paths_and_methods() {
        assert_eq!(get("/", false).status, 404);
        let req = Request {
            method: "POST",
            path: "/status",
            accepts_html: false,
        };
        let r = respond(&req, &view());
        assert_eq!((r.status, r.allow), (405, Some("GET, HEAD")));
    }
}
