//! A tiny HTTP/1.1 client for the internal API, signing requests as proxies do. Bodies can be
//! sent short or long on purpose.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nimbus_core::auth::{ClusterSecret, DATE_HEADER, EPOCH_HEADER};

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How to authenticate a request.
pub enum Auth<'a> {
    None,
    Signed {
        secret: &'a ClusterSecret,
        epoch: u64,
        skew_secs: i64,
    },
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Sends a request; `declared` overrides Content-Length (to send a body shorter or longer
/// than announced).
pub fn send(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    auth: &Auth<'_>,
    extra: &[(&str, String)],
    body: &[u8],
    declared: Option<usize>,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head =
        format!("{method} {path_and_query} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    if let Auth::Signed {
        secret,
        epoch,
        skew_secs,
    } = auth
    {
        let date = now().saturating_add_signed(*skew_secs);
        let signature = secret.sign(method, path_and_query, date, *epoch);
        head += &format!(
            "{DATE_HEADER}: {date}\r\n{EPOCH_HEADER}: {epoch}\r\nauthorization: {signature}\r\n"
        );
    }
    for (k, v) in extra {
        head += &format!("{k}: {v}\r\n");
    }
    head += &format!("content-length: {}\r\n\r\n", declared.unwrap_or(body.len()));
    stream.write_all(head.as_bytes())?;
    // The server may answer (and close) before taking the whole body: that is fine. The
    // write half stays open (a half-closed connection ends the request in hyper); a body
    // shorter than declared is then cut off by the read timeout on the server's side or by
    // our side dropping the connection after the response.
    let _ = stream.write_all(body);
    if declared.is_some_and(|d| d > body.len()) {
        // Truncated body: wait for the server to give up on it, then drop the connection.
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        let result = read_response(stream.try_clone()?);
        drop(stream);
        return result;
    }
    read_response(stream)
}

fn read_response(stream: TcpStream) -> std::io::Result<Response> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let mut body = Vec::new();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16).map_err(std::io::Error::other)?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A signed request with the current date and epoch 1, body length as declared.
pub fn signed(
    node: &super::Node,
    method: &str,
    path_and_query: &str,
    extra: &[(&str, String)],
    body: &[u8],
) -> Response {
    let auth = Auth::Signed {
        secret: &node.secret,
        epoch: 1,
        skew_secs: 0,
    };
    send(node.addr, method, path_and_query, &auth, extra, body, None).unwrap()
}

/// The URL of a fragment.
pub fn fragment_url(
    device: &str,
    policy: &str,
    partition: u32,
    version: u64,
    index: u8,
    object: &str,
) -> String {
    format!(
        "/v1/fragments/{device}/{policy}/{partition}/{version:016x}/{index}?path={}",
        object.replace('/', "%2F")
    )
}

/// Writes and commits a fragment; returns the statuses of both calls.
pub fn put_and_commit(node: &super::Node, url: &str, data: &[u8]) -> (u16, u16) {
    try_put_and_commit(node, url, data).unwrap()
}

/// As [`put_and_commit`], but a failed connection (a killed node) is an error, not a panic.
pub fn try_put_and_commit(
    node: &super::Node,
    url: &str,
    data: &[u8],
) -> std::io::Result<(u16, u16)> {
    let auth = Auth::Signed {
        secret: &node.secret,
        epoch: 1,
        skew_secs: 0,
    };
    let extra = [
        ("x-nimbus-data-bytes", data.len().to_string()),
        ("x-nimbus-segment-bytes", "1048576".to_string()),
    ];
    let put = send(node.addr, "PUT", url, &auth, &extra, data, None)?;
    if put.status != 201 {
        return Ok((put.status, 0));
    }
    let (path, query) = url.split_once('?').unwrap();
    let commit = send(
        node.addr,
        "POST",
        &format!("{path}/commit?{query}"),
        &auth,
        &[],
        &[],
        None,
    )?;
    Ok((put.status, commit.status))
}
