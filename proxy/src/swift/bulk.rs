//! Bulk delete (`POST /v1/AUTH_<account>?bulk-delete`, or `DELETE` with the same query):
//! the body lists up to 10,000 URL-encoded paths, one per line, `container/object` or
//! `container` (deleted when empty). The answer is always 200 once the request is read; it
//! tells, in the format the client accepts, how many were deleted, how many were not found,
//! and which failed and why — as Swift's bulk middleware does.

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use s3s::S3Error;

use super::listing::{Format, format_of, query_pairs, xml_escape};
use super::{decode, text};
use crate::s3::S3State;
use crate::s3::buckets::delete as delete_bucket;
use crate::s3::objects::check_key;
use crate::swift::objects::delete_live;

/// The most paths one request may name (Swift's `max_deletes_per_request`).
pub const MAX_DELETES: usize = 10_000;
/// The longest body: every path at its longest, plus its newline.
const MAX_BODY: usize = MAX_DELETES * (256 + 1 + 3 * 1024 + 2);
/// Deletes in flight at once.
const CONCURRENCY: usize = 16;

/// What became of one path.
enum Outcome {
    Deleted,
    NotFound,
    Failed(StatusCode),
}

/// Serves a bulk delete for `account`.
pub async fn delete(state: &S3State, account: &str, request: Request) -> Response {
    let pairs = query_pairs(&request);
    let format = format_of(&pairs, request.headers());
    let body = match http_body_util::Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("A bulk delete names at most {MAX_DELETES} paths"),
            );
        }
    };
    let Ok(body) = std::str::from_utf8(&body) else {
        return text(StatusCode::BAD_REQUEST, "Invalid UTF8 in the request body");
    };
    let paths: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if paths.len() > MAX_DELETES {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Maximum Bulk Deletes: {MAX_DELETES} per request"),
        );
    }
    if paths.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Invalid bulk delete.");
    }
    // Objects first (in parallel), then the containers named, which may have been emptied
    // by the same request.
    let (containers, objects): (Vec<String>, Vec<String>) = paths
        .iter()
        .map(|p| (*p).to_owned())
        .partition(|p| !p.trim_start_matches('/').contains('/'));
    let mut outcomes: Vec<(String, Outcome)> = futures_util::stream::iter(objects)
        .map(|path: String| async move {
            let outcome = delete_path(state, account, &path).await;
            (path, outcome)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for path in containers {
        let outcome = delete_path(state, account, &path).await;
        outcomes.push((path, outcome));
    }
    report(format, &outcomes)
}

async fn delete_path(state: &S3State, account: &str, path: &str) -> Outcome {
    let Ok(decoded) = decode(path.trim_start_matches('/')) else {
        return Outcome::Failed(StatusCode::BAD_REQUEST);
    };
    let (container, object) = match decoded.split_once('/') {
        Some((c, o)) => (c.to_owned(), Some(o.to_owned())),
        None => (decoded, None),
    };
    let bucket = {
        let map = state.cluster.map();
        match map.bucket(&container) {
            Some(b) if b.owner == account => b.clone(),
            _ => return Outcome::NotFound,
        }
    };
    let result: Result<(), S3Error> = match &object {
        None => delete_bucket(state, account, &container).await.map(|_| ()),
        Some(key) => match check_key(key) {
            Ok(()) => delete_live(state, account, (&container, &bucket), key).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => Outcome::Deleted,
        Err(e) if matches!(e.code().as_str(), "NoSuchKey" | "NoSuchBucket") => Outcome::NotFound,
        Err(e) if e.code().as_str() == "BucketNotEmpty" => Outcome::Failed(StatusCode::CONFLICT),
        Err(e) => Outcome::Failed(e.status_code().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)),
    }
}

fn status_line(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
}

fn report(format: Format, outcomes: &[(String, Outcome)]) -> Response {
    let deleted = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Deleted))
        .count();
    let not_found = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::NotFound))
        .count();
    let errors: Vec<(&str, String)> = outcomes
        .iter()
        .filter_map(|(p, o)| match o {
            Outcome::Failed(s) => Some((p.as_str(), status_line(*s))),
            _ => None,
        })
        .collect();
    // Swift's summary status: the worst error's class when some failed.
    let status = if errors.is_empty() {
        StatusCode::OK
    } else if outcomes
        .iter()
        .any(|(_, o)| matches!(o, Outcome::Failed(s) if s.is_server_error()))
    {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::BAD_REQUEST
    };
    let (content_type, body) = match format {
        Format::Json => (
            "application/json; charset=utf-8",
            serde_json::json!({
                "Number Deleted": deleted,
                "Number Not Found": not_found,
                "Response Status": status_line(status),
                "Response Body": "",
                "Errors": errors.iter().map(|(p, s)| [p, s.as_str()]).collect::<Vec<_>>(),
            })
            .to_string(),
        ),
        Format::Xml => {
            let mut x = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<delete><number_deleted>{deleted}</number_deleted><number_not_found>{not_found}</number_not_found><response_status>{}</response_status><response_body></response_body><errors>",
                status_line(status)
            );
            for (p, s) in &errors {
                x.push_str(&format!(
                    "<object><name>{}</name><status>{}</status></object>",
                    xml_escape(p),
                    xml_escape(s)
                ));
            }
            x.push_str("</errors></delete>\n");
            ("application/xml; charset=utf-8", x)
        }
        Format::Plain => {
            let mut t = format!(
                "Number Deleted: {deleted}\nNumber Not Found: {not_found}\nResponse Body: \nResponse Status: {}\nErrors:\n",
                status_line(status)
            );
            for (p, s) in &errors {
                t.push_str(&format!("{p}, {s}\n"));
            }
            ("text/plain; charset=utf-8", t)
        }
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Error"))
}
