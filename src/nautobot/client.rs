//! Nautobot's REST API over HTTP: a token, an optional CA bundle, limit/offset paging that follows
//! `next` to its end, and errors that say what to fix; and its GraphQL API (`POST /api/graphql/`,
//! [`Nautobot::graphql`]: one query, whose `errors` are a failed read even in an HTTP 200). What
//! the API returns is `docs/nautobot.md`; the objects are [`super::model`].
//!
//! `next` is an absolute URL built by Nautobot from the request's Host; behind a proxy it may name
//! another scheme or host than the one configured. Only its query (limit and offset) is taken, on
//! the configured URL: the token never leaves for a host the source does not name.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use reqwest::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::model::Page;
use crate::fetch::error_chain;

/// Objects per page asked for: Nautobot's `MAX_PAGE_SIZE` by default (it cuts a larger `limit`).
pub const PAGE_SIZE: usize = 1000;
/// Pages followed at most for one list (10 million objects at 1,000 a page): past it the paging
/// is taken to loop.
const MAX_PAGES: usize = 10_000;
/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one GraphQL query may take: a full read is one query (5,000 devices take ~3 s, 50,000
/// some 30 s on 2 cores).
const GRAPHQL_TIMEOUT: Duration = Duration::from_secs(300);
/// Nautobot's GraphQL endpoint, on the API base.
const GRAPHQL: &str = "/api/graphql/";
/// Times a request that got no answer is sent again (a GET, or a GraphQL query, which only
/// reads: safe to repeat).
const SEND_RETRIES: u64 = 2;
/// Characters of an error body kept in a message.
const BODY_IN_MESSAGE: usize = 300;

/// Reading Nautobot failed. Every variant names the URL asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NautobotError {
    /// The API base is not an http(s) URL.
    #[error("{url:?} is not an http(s) URL of a Nautobot")]
    BadUrl { url: String },
    /// The CA bundle does not parse.
    #[error("the CA bundle is not valid PEM: {message}")]
    CaBundle { message: String },
    /// The token is not usable in a header.
    #[error("the token holds characters an HTTP header cannot carry")]
    BadToken,
    /// 401 / 403: the token is wrong, expired, or lacks the permission to read this.
    #[error(
        "Nautobot refused the token for {url} (HTTP {status}: {detail}): check the token Secret and the token's permissions"
    )]
    Refused { url: String, status: u16, detail: String },
    /// Any other answer than 200.
    #[error("Nautobot answered HTTP {status} for {url}: {detail}")]
    Status { url: String, status: u16, detail: String },
    /// Nautobot answered over TLS with a certificate this client does not trust (signed by an
    /// unknown CA, for another name, expired): `why` says which. Not retried.
    #[error("Nautobot's TLS certificate at {url} is not trusted: {why}")]
    Untrusted { url: String, why: String },
    /// No answer: connection refused, TLS handshake, timeout.
    #[error("cannot reach Nautobot at {url}: {message}")]
    Unreachable { url: String, message: String },
    /// A GraphQL answer holding `errors` (Nautobot answers HTTP 200 with them, e.g. for a filter
    /// value it does not know): what Nautobot said, its messages joined. Nothing of the answer is
    /// used.
    #[error("Nautobot's GraphQL API refused the query at {url}: {message}")]
    Query { url: String, message: String },
    /// An answer that is not the page Nautobot's API sends.
    #[error("Nautobot's answer for {url} is not a page of its API: {message}")]
    Malformed { url: String, message: String },
    /// The list's count changed while its pages were read (objects created or deleted meanwhile
    /// shift limit/offset pages: some may have been missed).
    #[error(
        "{url} changed while it was read ({expected} objects on its first page, {got} read): read again later"
    )]
    Shifted { url: String, expected: u64, got: u64 },
    /// `next` kept coming past [`MAX_PAGES`] pages.
    #[error("paging {url} did not end after {pages} pages")]
    Runaway { url: String, pages: usize },
}

/// A Nautobot API client for one source.
#[derive(Debug)]
pub struct Nautobot {
    http: reqwest::Client,
    /// The API base, e.g. `https://nautobot.example.net` (without `/api`), no trailing `/`.
    base: String,
    token: header::HeaderValue,
    requests: AtomicU64,
}

impl Nautobot {
    /// A client for the Nautobot at `url` (its base, with or without a trailing `/api`) with
    /// `token`, trusting `ca_pem` (PEM certificates) besides the system's roots.
    pub fn new(url: &str, token: &str, ca_pem: Option<&[u8]>) -> Result<Self, NautobotError> {
        let base = base_url(url)?;
        let mut token = header::HeaderValue::from_str(&format!("Token {}", token.trim()))
            .map_err(|_| NautobotError::BadToken)?;
        token.set_sensitive(true);
        let mut b = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("ztp-operator/", env!("CARGO_PKG_VERSION")))
            // A new connection per request: a poll is a few requests a minute, and uWSGI (which
            // serves Nautobot) closes a kept-alive connection under a reused one.
            .pool_max_idle_per_host(0)
            // A redirect would carry the token elsewhere: Nautobot's API does not redirect.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| NautobotError::CaBundle { message: e.to_string() })?;
            if certs.is_empty() {
                return Err(NautobotError::CaBundle { message: "it holds no certificate".into() });
            }
            b = b.tls_certs_merge(certs);
        }
        let http = b.build().map_err(|e| NautobotError::CaBundle { message: error_chain(&e) })?;
        Ok(Self { http, base, token, requests: AtomicU64::new(0) })
    }

    /// The API base this client reads.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Requests made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Every object of the list at `path` (e.g. `/api/dcim/devices/`) matching `query`, page after
    /// page until `next` is null.
    pub async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<T>, NautobotError> {
        let first = list_url(&self.base, path, PAGE_SIZE, query);
        let mut url = first.clone();
        let mut out = Vec::new();
        let mut expected = None;
        for _ in 0..MAX_PAGES {
            let page: Page<T> = self.get(&url).await?;
            let expected = *expected.get_or_insert(page.count);
            if out.is_empty() {
                out.reserve(usize::try_from(page.count).unwrap_or(0).min(1_000_000));
            }
            out.extend(page.results);
            match page.next {
                None if out.len() as u64 != expected || page.count != expected => {
                    return Err(NautobotError::Shifted { url: first, expected, got: out.len() as u64 });
                }
                None => return Ok(out),
                Some(next) => {
                    url = follow(&self.base, path, &next).ok_or_else(|| NautobotError::Malformed {
                        url: url.clone(),
                        message: format!("its next page {next:?} has no query"),
                    })?
                }
            }
        }
        Err(NautobotError::Runaway { url: first, pages: MAX_PAGES })
    }

    /// The first `limit` objects of the list at `path` (e.g. the newest change-log entry).
    pub async fn first<T: DeserializeOwned>(
        &self,
        path: &str,
        limit: usize,
        query: &[(&str, String)],
    ) -> Result<Vec<T>, NautobotError> {
        let url = list_url(&self.base, path, limit, query);
        Ok(self.get::<Page<T>>(&url).await?.results)
    }

    /// The data of the GraphQL `query`'s answer, as `T` (its fields the query's). An answer with
    /// `errors` is [`NautobotError::Query`], whatever its `data` holds.
    pub async fn graphql<T: DeserializeOwned>(&self, query: &str) -> Result<T, NautobotError> {
        let url = format!("{}{GRAPHQL}", self.base);
        let payload = serde_json::json!({ "query": query }).to_string();
        let body = self
            .send(&url, || {
                self.http
                    .post(&url)
                    .timeout(GRAPHQL_TIMEOUT)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(payload.clone())
            })
            .await?;
        graphql_data(&url, &body)
    }

    async fn get<T: DeserializeOwned>(&self, url: &str) -> Result<T, NautobotError> {
        let body = self.send(url, || self.http.get(url)).await?;
        serde_json::from_slice(&body)
            .map_err(|e| NautobotError::Malformed { url: url.to_owned(), message: e.to_string() })
    }

    /// Sends the request `build` makes (again after a failure to connect: it only reads) with the
    /// token; the body of a 200.
    async fn send(
        &self,
        url: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, NautobotError> {
        let mut attempt = 0;
        let response = loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let sent = build()
                .header(header::AUTHORIZATION, self.token.clone())
                .header(header::ACCEPT, "application/json")
                .send()
                .await;
            let e = match sent {
                Ok(response) => break response,
                Err(e) => e,
            };
            // A refused certificate is refused again on a second try.
            if let Some(c) = refused_certificate(&e) {
                return Err(NautobotError::Untrusted { url: url.to_owned(), why: certificate_problem(c) });
            }
            // A read is safe to repeat: a connection reset or refused for a moment (a proxy or
            // Nautobot restarting) often succeeds on a second try.
            if attempt >= SEND_RETRIES || e.is_timeout() {
                return Err(NautobotError::Unreachable { url: url.to_owned(), message: error_chain(&e) });
            }
            attempt += 1;
            tracing::debug!(url, attempt, error = %error_chain(&e), "Nautobot request failed; retrying");
            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
        };
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| NautobotError::Unreachable { url: url.to_owned(), message: error_chain(&e) })?;
        if status != StatusCode::OK {
            return Err(refusal(url, status, &body));
        }
        Ok(body)
    }
}

/// The `data` of a GraphQL answer as `T`; its `errors`, when it has any, as
/// [`NautobotError::Query`] (read first: `data` then holds `null`s that `T` may not take).
fn graphql_data<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, NautobotError> {
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Option<Vec<serde_json::Value>>,
    }
    #[derive(serde::Deserialize)]
    struct Data<T> {
        data: Option<T>,
    }
    let malformed = |message: String| NautobotError::Malformed {
        url: url.to_owned(),
        message: format!("GraphQL: {message}"),
    };
    let errors = serde_json::from_slice::<Errors>(body).map_err(|e| malformed(e.to_string()))?.errors;
    if let Some(errors) = errors.filter(|e| !e.is_empty()) {
        return Err(NautobotError::Query { url: url.to_owned(), message: error_messages(&errors) });
    }
    match serde_json::from_slice::<Data<T>>(body).map_err(|e| malformed(e.to_string()))?.data {
        Some(data) => Ok(data),
        None => Err(malformed("no data and no errors".to_owned())),
    }
}

/// GraphQL errors' `message`s (each error whole when it has none), joined, cut to
/// [`BODY_IN_MESSAGE`].
fn error_messages(errors: &[serde_json::Value]) -> String {
    let messages: Vec<String> = errors
        .iter()
        .map(|e| match e.get("message").and_then(|m| m.as_str()) {
            Some(m) => m.to_owned(),
            None => e.to_string(),
        })
        .collect();
    messages.join("; ").chars().take(BODY_IN_MESSAGE).collect()
}

/// The error for a non-200 answer: its `detail` (or the body's start) as Nautobot said it.
fn refusal(url: &str, status: StatusCode, body: &[u8]) -> NautobotError {
    let detail = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(o)) => match (o.get("detail").and_then(|d| d.as_str()), o.get("errors"))
        {
            (Some(d), _) => d.to_owned(),
            // A GraphQL query Nautobot's schema refuses: 400 with its `errors`.
            (None, Some(serde_json::Value::Array(errors))) if !errors.is_empty() => error_messages(errors),
            _ => serde_json::Value::Object(o).to_string(),
        },
        _ => String::from_utf8_lossy(body).trim().to_owned(),
    };
    let detail: String = detail.chars().take(BODY_IN_MESSAGE).collect();
    let (url, status) = (url.to_owned(), status.as_u16());
    match status {
        401 | 403 => NautobotError::Refused { url, status, detail },
        _ => NautobotError::Status { url, status, detail },
    }
}

/// The certificate error rustls refused the server's certificate with, somewhere in `e`'s sources.
/// reqwest hands it over inside two `io::Error`s (the connector's, tokio-rustls's), whose
/// `source()` skips what they wrap: each is opened.
fn refused_certificate<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::CertificateError> {
    let mut cur = Some(e);
    while let Some(e) = cur {
        let mut inner: &(dyn std::error::Error + 'static) = e;
        while let Some(wrapped) = inner.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            inner = wrapped;
        }
        if let Some(rustls::Error::InvalidCertificate(c)) = inner.downcast_ref::<rustls::Error>() {
            return Some(c);
        }
        cur = e.source();
    }
    None
}

/// What is wrong with a refused certificate, in words a reader can act on (rustls's name of it in
/// parentheses).
fn certificate_problem(c: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match c {
        C::UnknownIssuer => "it is not signed by a CA this client trusts (UnknownIssuer)".to_owned(),
        C::BadSignature => "its signature does not match the CA's (BadSignature)".to_owned(),
        C::Expired | C::ExpiredContext { .. } => format!("it has expired ({c})"),
        C::NotValidYet | C::NotValidYetContext { .. } => format!("it is not valid yet ({c})"),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            format!("it is not for the URL's host name ({c})")
        }
        other => other.to_string(),
    }
}

/// The API base of `url`: http(s), without a trailing `/` or `/api`.
fn base_url(url: &str) -> Result<String, NautobotError> {
    let bad = || NautobotError::BadUrl { url: url.to_owned() };
    let parsed = reqwest::Url::parse(url.trim()).map_err(|_| bad())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() || parsed.query().is_some()
    {
        return Err(bad());
    }
    let s = parsed.as_str().trim_end_matches('/');
    Ok(s.strip_suffix("/api").unwrap_or(s).to_owned())
}

/// `base` + `path` + the query (form-encoded, as Django reads it), with `limit` first.
fn list_url(base: &str, path: &str, limit: usize, query: &[(&str, String)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(format!("limit={limit}"));
    q.extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
    format!("{base}{path}?{}", q.finish())
}

/// The next page on our own base: `next`'s query on `base` + `path`.
fn follow(base: &str, path: &str, next: &str) -> Option<String> {
    let (_, query) = next.split_once('?')?;
    Some(format!("{base}{path}?{query}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_is_http_without_api_or_slash() {
        assert_eq!(base_url("https://nb.example.net/").as_deref(), Ok("https://nb.example.net"));
        assert_eq!(base_url("https://nb.example.net/api/").as_deref(), Ok("https://nb.example.net"));
        assert_eq!(
            base_url("http://10.0.0.1:8080/nautobot/api").as_deref(),
            Ok("http://10.0.0.1:8080/nautobot")
        );
        for bad in ["ftp://nb", "nb.example.net", "", "http://nb/?x=1", "file:///etc/passwd"] {
            assert!(matches!(base_url(bad), Err(NautobotError::BadUrl { .. })), "{bad:?}");
        }
    }

    #[test]
    fn list_urls_encode_values_and_next_stays_on_the_configured_host() {
        let q = [("location", "DC 1/a&b".to_owned()), ("status", "Active".to_owned())];
        assert_eq!(
            list_url("https://nb", "/api/dcim/devices/", PAGE_SIZE, &q),
            "https://nb/api/dcim/devices/?limit=1000&location=DC+1%2Fa%26b&status=Active"
        );
        // Nautobot behind a proxy names its own host and scheme: only the query is taken.
        assert_eq!(
            follow(
                "https://nb",
                "/api/dcim/devices/",
                "http://internal:8080/api/dcim/devices/?limit=1000&offset=1000"
            )
            .as_deref(),
            Some("https://nb/api/dcim/devices/?limit=1000&offset=1000")
        );
        assert_eq!(follow("https://nb", "/api/dcim/devices/", "http://evil/"), None);
    }

    #[test]
    fn refusals_carry_nautobots_detail() {
        let e = refusal("u", StatusCode::FORBIDDEN, br#"{"detail":"Invalid token"}"#);
        assert_eq!(
            e,
            NautobotError::Refused { url: "u".into(), status: 403, detail: "Invalid token".into() }
        );
        assert!(e.to_string().contains("check the token Secret"), "{e}");
        let e = refusal("u", StatusCode::BAD_REQUEST, br#"{"bogus":["Unknown filter field"]}"#);
        assert_eq!(e.to_string(), r#"Nautobot answered HTTP 400 for u: {"bogus":["Unknown filter field"]}"#);
        let e = refusal("u", StatusCode::BAD_GATEWAY, &b"x".repeat(1000));
        assert!(matches!(&e, NautobotError::Status { detail, .. } if detail.len() == BODY_IN_MESSAGE));
    }

    #[test]
    fn graphql_errors_are_a_failed_read_whatever_data_holds() {
        #[derive(Debug, serde::Deserialize)]
        struct Lists {
            devices: Vec<serde_json::Value>,
        }
        // Nautobot 3.2.7's answer (HTTP 200) for a role it does not know.
        let body = br#"{"errors": [{"message": "{'role': ['Select a valid choice. x is not one of the available choices.']}", "locations": [{"line": 1, "column": 3}], "path": ["devices"]}], "data": {"devices": null}}"#;
        let e = graphql_data::<Lists>("u", body).expect_err("errors");
        assert_eq!(
            e,
            NautobotError::Query {
                url: "u".into(),
                message: "{'role': ['Select a valid choice. x is not one of the available choices.']}".into()
            }
        );
        assert!(e.to_string().starts_with("Nautobot's GraphQL API refused the query at u: {'role'"), "{e}");
        // Errors beside complete data: still failed.
        let body = br#"{"data": {"devices": []}, "errors": [{"message": "a"}, {"message": "b"}]}"#;
        assert!(
            matches!(graphql_data::<Lists>("u", body), Err(NautobotError::Query { message, .. }) if message == "a; b")
        );
        // No errors (absent, null or empty): the data.
        for body in [
            &br#"{"data": {"devices": [{"id": "d1"}]}}"#[..],
            br#"{"data": {"devices": [{"id": "d1"}]}, "errors": null}"#,
            br#"{"errors": [], "data": {"devices": [{"id": "d1"}]}}"#,
        ] {
            assert_eq!(graphql_data::<Lists>("u", body).expect("data").devices.len(), 1);
        }
        // Not an answer of Nautobot's: a proxy's `{}`, a list missing, HTML.
        for body in [
            &b"{}"[..],
            br#"{"data": null}"#,
            br#"{"data": {}}"#,
            br#"{"data": {"devices": null}}"#,
            b"<html>",
        ] {
            assert!(
                matches!(graphql_data::<Lists>("u", body), Err(NautobotError::Malformed { .. })),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // A query the schema refuses: HTTP 400 with `errors`.
        let e = refusal(
            "u",
            StatusCode::BAD_REQUEST,
            br#"{"errors": [{"message": "Cannot query field 'x' on type 'DeviceType'."}]}"#,
        );
        assert_eq!(
            e.to_string(),
            "Nautobot answered HTTP 400 for u: Cannot query field 'x' on type 'DeviceType'."
        );
    }

    #[test]
    fn a_refused_certificate_is_found_inside_the_io_error_tls_wraps_it_in() {
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Connect(#[source] std::io::Error);
        let refused =
            |c| std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::InvalidCertificate(c));
        let e = Connect(refused(rustls::CertificateError::UnknownIssuer));
        let c = refused_certificate(&e).expect("the certificate error");
        assert_eq!(certificate_problem(c), "it is not signed by a CA this client trusts (UnknownIssuer)");
        let e = Connect(refused(rustls::CertificateError::NotValidForName));
        let c = refused_certificate(&e).expect("the certificate error");
        assert!(
            certificate_problem(c).starts_with("it is not for the URL's host name"),
            "{}",
            certificate_problem(c)
        );
        let e = Connect(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"));
        assert_eq!(refused_certificate(&e), None);
    }

    /// A TLS server on loopback for one handshake, its certificate self-signed for 127.0.0.1
    /// (no CA trusts it); its URL and its certificate's PEM.
    async fn tls_server() -> (String, String) {
        use tokio_rustls::rustls::{
            ServerConfig,
            pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
        };
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .and_then(|p| p.self_signed(&key))
            .expect("certificate");
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], der)
            .expect("TLS config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("https://127.0.0.1:{}", listener.local_addr().expect("addr").port());
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = acceptor.accept(stream).await;
            }
        });
        (url, cert.pem())
    }

    #[tokio::test]
    async fn a_certificate_no_trusted_ca_signed_is_untrusted_not_unreachable() {
        let (url, _) = tls_server().await;
        let nb = Nautobot::new(&url, "t", None).expect("client");
        let e = nb.first::<serde_json::Value>("/api/dcim/devices/", 1, &[]).await.expect_err("refused");
        assert!(matches!(&e, NautobotError::Untrusted { why, .. } if why.contains("UnknownIssuer")), "{e}");
        assert_eq!(nb.requests(), 1, "a refused certificate is not tried again");
    }

    #[test]
    fn a_token_or_ca_bundle_that_cannot_be_used_is_said_before_any_request() {
        assert_eq!(Nautobot::new("https://nb", "a\nb", None).err(), Some(NautobotError::BadToken));
        let e = Nautobot::new("https://nb", "t", Some(b"not pem")).expect_err("bad CA");
        assert!(matches!(e, NautobotError::CaBundle { .. }), "{e}");
    }
}
