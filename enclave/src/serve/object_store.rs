//! Fetching a sealed model from an HTTP(S) object store (a Kubernetes pod
//! has no host blob service): the length from a one-byte range request,
//! then byte ranges on several connections at once, each checked
//! (`206 Partial Content`, the `Content-Range` asked for, exactly that many
//! bytes) and retried on its own. The store is untrusted like the host: it
//! can withhold or corrupt bytes, and the sealed format's authentication
//! catches every corruption later. HTTPS trusts only the CA it is given
//! (the guest carries no public root store); plain HTTP is as good for
//! integrity, since nothing here is secret or believed.

use super::fetch::FetchError;
use std::time::Duration;

/// Attempts per range.
const ATTEMPTS: u32 = 3;
/// Smallest range worth its own request.
const MIN_RANGE: u64 = 8 << 20;

/// An object store and the CA its TLS certificate must chain to.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    /// `http(s)://HOST[:PORT]/PREFIX`; objects are `BASE/NAME`.
    pub base: String,
    /// PEM; required for `https://`.
    pub ca_pem: Option<Vec<u8>>,
}

fn http_err(url: &str, message: impl Into<String>) -> FetchError {
    FetchError::Http {
        url: url.to_string(),
        message: message.into(),
    }
}

impl ObjectStore {
    /// Checks the URL and CA up front (before any key release).
    pub fn new(base: &str, ca_pem: Option<Vec<u8>>) -> Result<Self, FetchError> {
        let base = base.trim_end_matches('/').to_string();
        let https = base.starts_with("https://");
        if !https && !base.starts_with("http://") {
            return Err(http_err(&base, "an http:// or https:// URL is expected"));
        }
        if https && ca_pem.is_none() {
            return Err(http_err(
                &base,
                "an https:// object store needs its CA (model_ca in the init-data, or --model-ca): the guest trusts no public root store",
            ));
        }
        if let Some(pem) = &ca_pem
            && crate::kbs_client::pinned_tls(pem).is_none()
        {
            return Err(http_err(
                &base,
                "the object store's CA holds no certificate",
            ));
        }
        Ok(ObjectStore { base, ca_pem })
    }

    fn agent(&self) -> ureq::Agent {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_body(Some(Duration::from_secs(300)));
        if let Some(tls) = self
            .ca_pem
            .as_deref()
            .and_then(crate::kbs_client::pinned_tls)
        {
            config = config.tls_config(tls);
        }
        config.build().into()
    }

    /// The whole object `name`, at most `max` bytes, `parallel` ranges at a
    /// time. Blocking: call it off the async runtime.
    pub fn fetch(&self, name: &str, parallel: usize, max: u64) -> Result<Vec<u8>, FetchError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
            || name
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(http_err(
                &self.base,
                format!(
                    "object name {name:?}: letters, digits, '.', '_', '-' and '/' between non-empty parts only"
                ),
            ));
        }
        let url = format!("{}/{name}", self.base);
        let agent = self.agent();
        let (_, len) = range(&agent, &url, 0, 0, None)?;
        if len > max {
            return Err(FetchError::TooLarge {
                name: url,
                len,
                max,
            });
        }
        let size = usize::try_from(len).map_err(|_| FetchError::Memory(len))?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(size)
            .map_err(|_| FetchError::Memory(len))?;
        buf.resize(size, 0);
        let parallel = parallel.max(1) as u64;
        let chunk = (len / parallel + 1).max(MIN_RANGE) as usize;
        std::thread::scope(|s| {
            let jobs: Vec<_> = buf
                .chunks_mut(chunk)
                .enumerate()
                .map(|(i, part)| {
                    let (agent, url) = (&agent, &url);
                    s.spawn(move || {
                        let first = (i * chunk) as u64;
                        let last = first + part.len() as u64 - 1;
                        let mut attempt = 1;
                        loop {
                            match range(agent, url, first, last, Some(&mut *part)) {
                                Ok((_, total)) if total == len => return Ok(()),
                                Ok((_, total)) => {
                                    return Err(http_err(
                                        url,
                                        format!("the object changed length ({len} then {total} bytes)"),
                                    ));
                                }
                                Err(e) if attempt >= ATTEMPTS => return Err(e),
                                Err(e) => {
                                    tracing::warn!(first, attempt, error = %e, "object range failed; retrying");
                                    attempt += 1;
                                }
                            }
                        }
                    })
                })
                .collect();
            jobs.into_iter().try_for_each(|j| {
                j.join()
                    .unwrap_or_else(|_| Err(http_err(&url, "a range reader panicked")))
            })
        })?;
        Ok(buf)
    }
}

/// `GET url` for bytes `first..=last`: checks the 206 and its
/// `Content-Range`, fills `into` (exactly its length) when given; returns
/// the bytes read and the object's whole length.
fn range(
    agent: &ureq::Agent,
    url: &str,
    first: u64,
    last: u64,
    into: Option<&mut [u8]>,
) -> Result<(u64, u64), FetchError> {
    let mut resp = agent
        .get(url)
        .header("range", &format!("bytes={first}-{last}"))
        .call()
        .map_err(|e| http_err(url, e.to_string()))?;
    let status = resp.status().as_u16();
    if status != 206 {
        return Err(http_err(
            url,
            format!(
                "HTTP {status} to a range request (206 Partial Content expected: the store must serve byte ranges)"
            ),
        ));
    }
    let header = resp
        .headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let total = parse_content_range(&header, first, last).ok_or_else(|| {
        http_err(
            url,
            format!("Content-Range {header:?} is not bytes {first}-{last}/LENGTH"),
        )
    })?;
    let want = last - first + 1;
    let mut reader = resp.body_mut().with_config().limit(want).reader();
    match into {
        Some(buf) => {
            std::io::Read::read_exact(&mut reader, buf)
                .map_err(|e| http_err(url, format!("bytes {first}-{last}: {e}")))?;
        }
        None => {
            let mut one = [0u8; 1];
            std::io::Read::read_exact(&mut reader, &mut one)
                .map_err(|e| http_err(url, format!("bytes {first}-{last}: {e}")))?;
        }
    }
    Ok((want, total))
}

/// `bytes FIRST-LAST/TOTAL` with the range asked for; the total.
fn parse_content_range(header: &str, first: u64, last: u64) -> Option<u64> {
    let rest = header.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let (a, b, total): (u64, u64, u64) = (a.parse().ok()?, b.parse().ok()?, total.parse().ok()?);
    (a == first && b == last && last < total).then_some(total)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn content_range_must_be_the_range_asked_for() {
        assert_eq!(parse_content_range("bytes 0-0/1234", 0, 0), Some(1234));
        assert_eq!(parse_content_range("bytes 10-19/20", 10, 19), Some(20));
        assert_eq!(parse_content_range("bytes 10-19/19", 10, 19), None);
        assert_eq!(parse_content_range("bytes 0-9/20", 10, 19), None);
        assert_eq!(parse_content_range("bytes 10-19/*", 10, 19), None);
        assert_eq!(parse_content_range("items 10-19/20", 10, 19), None);
    }

    #[test]
    fn urls_cas_and_names_are_checked_before_anything_is_fetched() {
        assert!(ObjectStore::new("ftp://x/y", None).is_err());
        let e = ObjectStore::new("https://store.example/models", None).unwrap_err();
        assert!(e.to_string().contains("CA"), "{e}");
        assert!(ObjectStore::new("https://store.example", Some(b"not pem".to_vec())).is_err());
        let plain = ObjectStore::new("http://127.0.0.1:9/models/", None).unwrap();
        assert_eq!(plain.base, "http://127.0.0.1:9/models");
        for bad in ["", "../x", "a//b", "a b", "a/./b"] {
            assert!(plain.fetch(bad, 1, 1 << 20).is_err(), "{bad:?}");
        }
    }
}
