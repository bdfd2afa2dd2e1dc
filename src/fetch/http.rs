//! http and https sources (reqwest on rustls; proxies from `HTTPS_PROXY` / `HTTP_PROXY` /
//! `NO_PROXY`, which reqwest reads from the environment).

use futures::StreamExt;
use reqwest::header::{ACCEPT_ENCODING, CONTENT_RANGE, CONTENT_TYPE, RANGE};

use super::{FetchConfig, FetchError, Opened};

pub(super) fn client(
    config: &FetchConfig,
    ca_pem: Option<&[u8]>,
    insecure: bool,
) -> Result<reqwest::Client, FetchError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.idle_timeout)
        .tcp_nodelay(true)
        .user_agent(concat!("ztp-operator/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| FetchError::Unsupported(format!("the CA bundle is not valid PEM: {e}")))?;
        b = b.tls_certs_merge(certs);
    }
    if insecure {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| FetchError::Unsupported(format!("cannot build an HTTP client: {e}")))
}

/// Parses `bytes START-END/TOTAL`.
fn content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let start = range.split_once('-')?.0.parse().ok()?;
    Some((start, total.parse().ok()))
}

pub(super) async fn open(
    client: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    offset: u64,
) -> Result<Opened, FetchError> {
    let mut req = client.get(url).header(ACCEPT_ENCODING, "identity");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if offset > 0 {
        req = req.header(RANGE, format!("bytes={offset}-"));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| FetchError::Transfer { url: url.to_owned(), message: error_chain(&e) })?;
    let status = resp.status().as_u16();
    let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (starts_at, total) = match status {
        200 => (0, resp.content_length()),
        206 => {
            let (start, total) = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(content_range)
                .ok_or_else(|| FetchError::Transfer {
                    url: url.to_owned(),
                    message: "206 without a valid Content-Range".into(),
                })?;
            if start > offset {
                return Err(FetchError::Transfer {
                    url: url.to_owned(),
                    message: format!("asked for bytes from {offset}, got a range starting at {start}"),
                });
            }
            (start, total)
        }
        _ => return Err(FetchError::Status { url: url.to_owned(), status }),
    };
    let url_owned = url.to_owned();
    let chunks =
        resp.bytes_stream().map(move |r| r.map_err(|e| format!("{url_owned}: {}", error_chain(&e)))).boxed();
    Ok(Opened { chunks, total, starts_at, content_type })
}

/// reqwest's Display hides the cause ("error sending request"); show the whole chain.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::content_range;

    #[test]
    fn parses_content_range() {
        assert_eq!(content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(content_range("items 1-2/3"), None);
    }
}
