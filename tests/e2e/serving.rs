//! The serving paths themselves: the sendfile fast path answers exactly as the router does, keeps
//! connections alive and hands them to hyper mid-stream; a snapshot swap under load fails no
//! request; and the same server serves devices from the S3 store.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::{Client, Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ztp_operator::hash::Sha256Digest;

use crate::support::{
    self,
    binaries::serve,
    lab::{headers, lab, onie_headers},
};

/// Status, the headers that matter, and the body's digest.
async fn answer(
    c: &Client,
    method: Method,
    url: &str,
    extra: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let mut h = onie_headers("SN-LEAF07", "0c:42:a1:00:00:07", "os-install");
    h.extend(headers(extra));
    let r = c.request(method, url).headers(h).send().await.expect("request");
    let (status, kept) = (r.status().as_u16(), headers_but(&r, &[]));
    let body = r.bytes().await.expect("body");
    (status, kept, Sha256Digest::of(&body).to_string())
}

/// A response's headers, sorted, without those that differ between two servers anyway (`date`,
/// connection management) and without `skip`.
fn headers_but(r: &reqwest::Response, skip: &[&str]) -> Vec<(String, String)> {
    let mut kept: Vec<(String, String)> = r
        .headers()
        .iter()
        .filter(|(n, _)| !matches!(n.as_str(), "date" | "connection" | "keep-alive"))
        .filter(|(n, _)| !skip.contains(&n.as_str()))
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    kept.sort();
    kept
}

/// A ZTP JSON answer as an NVOS switch's curl gets it: status, headers (but `content-length`,
/// which counts the server's own URL), and the body with that URL replaced by `{base}`.
async fn ztp_answer(
    c: &Client,
    method: Method,
    base: &str,
    path: &str,
) -> (u16, Vec<(String, String)>, String) {
    let h = headers(&[
        ("User-Agent", "curl/7.88.1"),
        ("Accept", "*/*"),
        ("SERIAL-NUMBER", "SN-LEAF07"),
        ("PRODUCT-NAME", "MSN2700"),
        ("BASE-MAC-ADDRESS", "0c:42:a1:00:00:07"),
        ("NVOS-VERSION", "nvos-25.02.2002"),
    ]);
    let r = c.request(method, format!("{base}{path}")).headers(h).send().await.expect("request");
    let (status, kept) = (r.status().as_u16(), headers_but(&r, &["content-length"]));
    let body = r.text().await.expect("body").replace(base, "{base}");
    (status, kept, body)
}

#[tokio::test]
async fn the_fast_path_answers_exactly_as_the_router_does() {
    let lab = lab("serving-alike").await;
    let data = lab.manifests.parent().expect("dir").join("d");
    let (_router, router_base) =
        serve("serving-alike-router", &[format!("--store-dir={}", data.display())], &["--no-sendfile"]).await;
    let size = lab.install.len();
    let sha = Sha256Digest::of(&lab.install).to_string();
    let etag = format!("\"{sha}\"");
    // A new connection per request, as a switch makes: once the fast path hands a connection to
    // hyper (any answer it does not give itself), hyper keeps it, and a pooled connection would
    // carry every later case through the router on both sides.
    let c = Client::builder().pool_max_idle_per_host(0).build().expect("client");
    type Case<'a> = (Method, &'a str, Vec<(&'a str, String)>);
    let cases: Vec<Case> = vec![
        (Method::GET, "/onie-installer-x86_64-accton_as7712_32x-r0", vec![]),
        (Method::HEAD, "/onie-installer-x86_64-accton_as7712_32x-r0", vec![]),
        (Method::GET, "/onie", vec![("Range", "bytes=100-199".into())]),
        (Method::GET, "/onie", vec![("Range", "bytes=-1000".into())]),
        (Method::GET, "/onie", vec![("Range", format!("bytes={}-", size - 10))]),
        (Method::GET, "/onie", vec![("Range", format!("bytes={size}-"))]),
        (Method::GET, "/onie", vec![("If-None-Match", etag.clone())]),
        (Method::GET, "/onie", vec![("Range", "bytes=0-9".into()), ("If-Range", "\"other\"".into())]),
        (Method::GET, "/images/nos/1/nos.bin?cache-buster=1", vec![]),
        (Method::GET, "/v1/firmware/onie/1", vec![]),
        (Method::GET, "/images/nos/1/absent.bin", vec![]),
        (Method::GET, "/images/nos/1/..%2fmanifest.json", vec![]),
    ];
    for (method, path, extra) in &cases {
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let fast = answer(&c, method.clone(), &format!("{}{path}", lab.base), &extra).await;
        let routed = answer(&c, method.clone(), &format!("{router_base}{path}"), &extra).await;
        assert_eq!(fast, routed, "{method} {path} {extra:?}");
    }
    // ZTP JSON (the fast path answers a GET that renders, from the snapshot's cache): the same but
    // for the server's own URL inside the document.
    let ztp_cases: Vec<(Method, &str)> = vec![
        (Method::GET, "/nvos/SN-LEAF07/ztp.json"),
        (Method::GET, "/nvos/SN-LEAF07/ztp.json"), // now from the cache
        (Method::GET, "/sonic/SN-LEAF07/ztp.json?x=1"),
        (Method::GET, "/nvos/ztp.json"),
        (Method::HEAD, "/nvos/SN-LEAF07/ztp.json"),
        (Method::GET, "/nvos/SN-NOBODY/ztp.json"),
        (Method::GET, "/cumulus/SN-LEAF07/ztp.json"),
        (Method::GET, "/nvos/SN-LEAF07/ztp.json/more"),
    ];
    for (method, path) in &ztp_cases {
        let fast = ztp_answer(&c, method.clone(), &lab.base, path).await;
        let routed = ztp_answer(&c, method.clone(), &router_base, path).await;
        assert_eq!(fast, routed, "{method} {path}");
    }
    let (status, _, body) = ztp_answer(&c, Method::GET, &lab.base, "/nvos/SN-LEAF07/ztp.json").await;
    assert_eq!(status, 200);
    assert!(body.contains("{base}/nvos/SN-LEAF07/sections/02-commands-list"), "{body}");

    // And they are the right answers.
    let full = answer(&c, Method::GET, &format!("{}/onie", lab.base), &[]).await;
    assert_eq!((full.0, full.2.as_str()), (200, sha.as_str()));
    let tail = answer(&c, Method::GET, &format!("{}/onie", lab.base), &[("Range", "bytes=-1000")]).await;
    assert_eq!((tail.0, tail.2), (206, Sha256Digest::of(&lab.install[size - 1000..]).to_string()));
}

/// Reads HTTP/1.1 responses (head + `Content-Length` body) off `raw` in order.
fn responses(mut raw: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let mut h = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut h);
        let httparse::Status::Complete(head) = r.parse(raw).expect("a response head") else {
            panic!("truncated response head: {:?}", String::from_utf8_lossy(raw));
        };
        let len: usize = r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
            .expect("content-length");
        out.push((r.code.expect("status"), raw[head..head + len].to_vec()));
        raw = &raw[head + len..];
    }
    out
}

#[tokio::test]
async fn one_connection_carries_fast_answers_then_hands_over_to_the_router() {
    let lab = lab("serving-keepalive").await;
    let addr = lab.base.trim_start_matches("http://").to_owned();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    // Pipelined in one write, as ONIE's wget never does but a proxy may: a fast range, a fast
    // HEAD, a route only the router knows, then another range (now the router's) closing.
    let img = "GET /images/nos/1/nos.bin HTTP/1.1\r\nHost: x\r\nUser-Agent: Wget\r\n";
    let requests = format!(
        "{img}Range: bytes=0-9\r\n\r\nHEAD /images/nos/1/nos.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n{img}Range: bytes=10-19\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(requests.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), sock.read_to_end(&mut raw))
        .await
        .expect("the server closes after Connection: close")
        .expect("read");
    // HEAD has a Content-Length but no body: split it out by hand.
    let text = String::from_utf8_lossy(&raw).into_owned();
    let head_at: Vec<usize> = (0..raw.len()).filter(|&i| raw[i..].starts_with(b"HTTP/1.1 ")).collect();
    assert_eq!(head_at.len(), 4, "four answers on one connection: {text:?}");
    let first = responses(&raw[..head_at[1]]);
    assert_eq!(first, vec![(206, lab.install[0..10].to_vec())]);
    assert!(raw[head_at[1]..head_at[2]].starts_with(b"HTTP/1.1 200 OK"), "HEAD: {text:?}");
    let rest = responses(&raw[head_at[2]..]);
    assert_eq!(rest, vec![(200, b"ok\n".to_vec()), (206, lab.install[10..20].to_vec())]);
}

#[tokio::test]
async fn a_snapshot_swap_under_load_fails_no_request() {
    let lab = lab("serving-swap-load").await;
    let profiles = std::fs::read_to_string(lab.manifests.join("profiles.yaml")).expect("profiles");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (done, failures) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(std::sync::Mutex::new(Vec::<String>::new())));
    let mut workers = Vec::new();
    // Two downloaders: the lab admits two downloads at a time (a third would get its 503).
    for i in 0..4 {
        let (base, stop, done, failures) = (lab.base.clone(), stop.clone(), done.clone(), failures.clone());
        let expected = lab.install[1000..3000].to_vec();
        workers.push(tokio::spawn(async move {
            let c = Client::new();
            while !stop.load(Ordering::Relaxed) {
                // Half ask for their ZTP JSON (rendered per snapshot), half download (fast path).
                let (what, ok) = if i % 2 == 0 {
                    let r = c.get(format!("{base}/nvos/SN-LEAF07/ztp.json")).send().await;
                    match r {
                        Ok(r) if r.status() == StatusCode::OK => {
                            let body = r.text().await.unwrap_or_default();
                            ("ztp.json", body.contains("\"ztp\""))
                        }
                        _ => ("ztp.json", false),
                    }
                } else {
                    let r = c
                        .get(format!("{base}/onie"))
                        .headers(onie_headers("SN-LEAF07", "0c:42:a1:00:00:07", "os-install"))
                        .header("Range", "bytes=1000-2999")
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == StatusCode::PARTIAL_CONTENT => {
                            ("image", r.bytes().await.is_ok_and(|b| b.as_ref() == expected.as_slice()))
                        }
                        _ => ("image", false),
                    }
                };
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                } else if let Ok(mut f) = failures.lock() {
                    f.push(what.to_owned());
                }
            }
        }));
    }
    let c = Client::new();
    for round in 0..4 {
        let name = format!("leaf07-round{round}");
        // The hostname shows in the commands list, the ping host in the ZTP JSON itself (which
        // is cached per snapshot: the new one must be served, never the old one's).
        let ping = format!("192.0.2.{}", 100 + round);
        std::fs::write(
            lab.manifests.join("profiles.yaml"),
            profiles
                .replace("hostname: leaf07", &format!("hostname: {name}"))
                .replace(r#"pingHosts: ["192.0.2.1"]"#, &format!(r#"pingHosts: ["{ping}"]"#)),
        )
        .expect("write");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let url = format!("{}/nvos/SN-LEAF07/sections/02-commands-list", lab.base);
            let body = c.get(url).send().await.expect("get").text().await.expect("text");
            let url = format!("{}/nvos/SN-LEAF07/ztp.json", lab.base);
            let json = c.get(url).send().await.expect("get").text().await.expect("text");
            if body.contains(&name) && json.contains(&ping) {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: new snapshot not served");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let failures = failures.lock().expect("failures").clone();
    let of = |kind: &str| failures.iter().filter(|f| f.as_str() == kind).count();
    assert!(
        failures.is_empty(),
        "failed during the swaps: {} ZTP JSON, {} image",
        of("ztp.json"),
        of("image")
    );
    assert!(done.load(Ordering::Relaxed) > 50, "too little load to mean anything");
}

#[tokio::test]
async fn devices_are_served_from_the_s3_store() {
    let lab = lab("serving-s3-source").await;
    let t = support::s3_test("serving-s3").await;
    // The lab's store, object for object, in a bucket: images, snapshots, manifest.json.
    let data = lab.manifests.parent().expect("dir").join("d");
    let mut stack = vec![data.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // .tmp/, .status/, the manifest lock
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let key = path.strip_prefix(&data).expect("inside").to_string_lossy().into_owned();
            let body = aws_sdk_s3::primitives::ByteStream::from(std::fs::read(&path).expect("read"));
            t.client.put_object().bucket(&t.bucket).key(&key).body(body).send().await.expect("put");
        }
    }
    let flags = [
        format!("--s3-bucket={}", t.bucket),
        format!("--s3-endpoint={}", t.endpoint),
        "--s3-path-style".into(),
    ];
    let (_server, base) = serve("serving-s3", &flags, &[]).await;
    let c = Client::new();
    let sha = Sha256Digest::of(&lab.install).to_string();
    let onie = |op: &str| onie_headers("SN-LEAF07", "0c:42:a1:00:00:07", op);
    let full = c.get(format!("{base}/onie-installer")).headers(onie("os-install")).send().await.expect("get");
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(full.headers()["etag"], format!("\"{sha}\"").as_str());
    assert_eq!(Sha256Digest::of(&full.bytes().await.expect("body")).to_string(), sha);
    let part = c
        .get(format!("{base}/onie"))
        .headers(onie("os-install"))
        .header("Range", "bytes=5-14")
        .send()
        .await
        .expect("range");
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.expect("body").as_ref(), &lab.install[5..15]);
    let head = c.head(format!("{base}/images/nos/1/nos.bin")).send().await.expect("head");
    assert_eq!(head.headers()["content-length"], lab.install.len().to_string().as_str());
    let json = c
        .get(format!("{base}/nvos/ztp.json"))
        .headers(headers(&[
            ("User-Agent", "NVOS-ZTP/0.1"),
            ("PRODUCT-NAME", "N5110_LD"),
            ("SERIAL-NUMBER", "SN-LEAF07"),
            ("BASE-MAC-ADDRESS", "0C:42:A1:00:00:07"),
        ]))
        .send()
        .await
        .expect("ztp.json");
    assert_eq!(json.status(), StatusCode::OK);
    // A switch no profile claims (another serial, MAC and machine): ONIE goes on to its next name.
    let stranger = headers(&[
        ("User-Agent", "Wget"),
        ("ONIE-SERIAL-NUMBER", "SN-NOBODY"),
        ("ONIE-ETH-ADDR", "0c:42:a1:00:00:99"),
        ("ONIE-MACHINE", "mlnx_x86"),
        ("ONIE-ARCH", "x86_64"),
        ("ONIE-OPERATION", "os-install"),
    ]);
    let r = c.get(format!("{base}/onie-installer")).headers(stranger).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// SIGTERM (what the kubelet sends a pod it stops) ends `serve` gracefully: it stops accepting
/// connections, lets the image download under way send every byte, then exits with status 0.
/// Before, `serve` had no SIGTERM handler: as PID 1 in its container it ignored the signal and was
/// killed mid-download when the grace period ran out (seen on the real node: each server pod of a
/// rollout took the whole 30 s); as a plain process the signal cut the download at once.
#[tokio::test]
async fn sigterm_stops_accepting_finishes_the_download_under_way_and_exits_cleanly() {
    let lab = lab("serving-sigterm").await;
    let data = lab.manifests.parent().expect("dir").join("d");
    let (mut server, base) =
        serve("serving-sigterm", &[format!("--store-dir={}", data.display())], &[]).await;
    let addr = base.trim_start_matches("http://").to_owned();
    let c = Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let mut r = c
        .get(format!("{base}/onie-installer-x86_64-accton_as7712_32x-r0"))
        .headers(onie_headers("SN-LEAF07", "0c:42:a1:00:00:07", "os-install"))
        .send()
        .await
        .expect("download");
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.chunk().await.expect("first bytes").expect("a first chunk").to_vec();
    assert!(body.len() < lab.install.len(), "the download is under way when the signal comes");

    let pid = i32::try_from(server.child.id()).expect("pid");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "send SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting connections after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while let Some(chunk) = r.chunk().await.expect("the rest of the download after SIGTERM") {
        body.extend_from_slice(&chunk);
    }
    assert_eq!(body.len(), lab.install.len(), "every byte of the download");
    assert!(Sha256Digest::of(&body) == Sha256Digest::of(&lab.install), "the download's bytes");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "serve still running 30 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "serve exits 0 after SIGTERM, not killed by it: {status:?}");
}
