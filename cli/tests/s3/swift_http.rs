//! Swift over HTTP with curl, as the Swift tests drive it: requests, headers, and a token for
//! the dev cluster's Swift user (`dev.env`).

use crate::cluster::Cluster;

/// Runs curl; returns (status, headers, body).
pub fn curl(args: &[&str]) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let body = dir.path().join("body");
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "60", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let headers = std::fs::read_to_string(&headers).unwrap_or_default();
    (status, headers, std::fs::read(&body).unwrap_or_default())
}

/// The value of header `name` in curl's dump of the response headers.
pub fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// The Swift variables of the cluster's `dev.env`: (auth URL, user, key).
pub fn credentials(cluster: &Cluster) -> (String, String, String) {
    let env = std::fs::read_to_string(cluster.path().join("dev.env")).unwrap();
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_owned())
            .unwrap_or_else(|| panic!("{name} in dev.env"))
    };
    (var("ST_AUTH"), var("ST_USER"), var("ST_KEY"))
}

/// A Swift session: the storage URL and the token header.
pub struct Swift {
    /// `http://host/v1/AUTH_<account>`.
    pub url: String,
    /// `X-Auth-Token: <token>`.
    pub token: String,
}

impl Swift {
    /// Logs in as the cluster's Swift user.
    pub fn login(cluster: &Cluster) -> Swift {
        let (auth, user, key) = credentials(cluster);
        Swift::login_as(&auth, &user, &key)
    }

    /// Logs in at auth URL `auth` as `user` (`account:user`) with `key`. A credential just
    /// created reaches the proxy through its watch of the cluster map, moments after the
    /// metadata members commit it: a refused login is tried again for a few seconds.
    pub fn login_as(auth: &str, user: &str, key: &str) -> Swift {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let (status, headers) = loop {
            let (status, headers, _) = curl(&[
                "-H",
                &format!("X-Auth-User: {user}"),
                "-H",
                &format!("X-Auth-Key: {key}"),
                auth,
            ]);
            if status != 401 || std::time::Instant::now() > deadline {
                break (status, headers);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        assert_eq!(status, 200, "login of {user}");
        Swift {
            url: header(&headers, "x-storage-url").unwrap(),
            token: format!(
                "X-Auth-Token: {}",
                header(&headers, "x-auth-token").unwrap()
            ),
        }
    }

    /// Sends `method` to `path` (below the storage URL) with the token and `args` (curl's).
    pub fn call(&self, method: &str, path: &str, args: &[&str]) -> (u16, String, Vec<u8>) {
        let url = format!("{}/{path}", self.url);
        let mut all = vec!["-X", method, "-H", &self.token];
        all.extend_from_slice(args);
        all.push(&url);
        curl(&all)
    }

    /// HEAD of `path` (curl's `-I`, so it does not wait for a body).
    pub fn head(&self, path: &str) -> (u16, String) {
        let url = format!("{}/{path}", self.url);
        let (status, headers, _) = curl(&["-I", "-H", &self.token, &url]);
        (status, headers)
    }
}
