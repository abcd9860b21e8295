//! The master's HTTP status endpoint (`--status-listen`): the board for
//! people (`/status`), for programs (`/status.json`), for Prometheus
//! (`/metrics`) and for probes (`/healthz`).
//!
//! It is served by the master's own loop, so it must never make that loop
//! wait: [`StatusServer`] owns non-blocking sockets only, tells the loop
//! what to poll ([`StatusServer::interest`]) and when its next deadline is,
//! and does a bounded amount of work for each readiness it is told of. A
//! silent client, a half-sent request, a client that never reads, or a
//! flood of connections each costs at most a connection slot until the
//! idle timeout; past the cap on connections the listener is not polled
//! and new connections wait in the kernel's queue.
//!
//! The parts: `exchange` is one connection's HTTP/1.x state machine
//! without its socket (parsed with `httparse`, property-tested); `server`
//! moves bytes between it and the sockets; `pages` and `metrics` render a
//! [`PoolView`], plain data the master fills at each request.
//!
//! Never here: a blocking call, a thread, a request body, a pid or a
//! status text as a metric label.

mod exchange;
mod metrics;
mod pages;
mod server;
mod view;

pub use pages::respond;
pub use server::{Limits, StatusServer};
pub use view::{Activity, Bounds, Counts, Histogram, PoolView, SlotView};

/// A parsed request, as the pages see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// `GET` or `HEAD` (the server answers other methods itself: 405).
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The client's `Accept` names `text/html`.
    pub accepts_html: bool,
}

/// A response, before the server adds its framing (`Content-Length`,
/// `Connection`) and drops the body of a HEAD's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// The `Allow` header, for a 405.
    pub allow: Option<&'static str>,
}

/// The content type of every plain-text answer.
pub const TEXT: &str = "text/plain; charset=utf-8";

/// What a 405 says is allowed.
pub const ALLOWED: &str = "GET, HEAD";

impl Response {
    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type: TEXT,
            body: body.into(),
            allow: None,
        }
    }

    /// 405, with `Allow: GET, HEAD`.
    pub fn not_allowed() -> Response {
        Response {
            allow: Some(ALLOWED),
            ..Response::text(405, "only GET and HEAD are served here\n")
        }
    }
}
