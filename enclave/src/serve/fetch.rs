//! Fetching a sealed model from the host's blob service: the length first,
//! then ranges over several connections at once, each range retried on its
//! own. The host is untrusted: it can only withhold or corrupt bytes, and
//! the sealed format's authentication catches every corruption later. What
//! it announces is checked here (lengths, offsets) before memory is taken.

use ciel_protocol::control::{self, ControlError, MAX_BLOB_READ, Message};
use ciel_transport::Endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest sealed model the guest takes (64 GiB) unless told otherwise.
pub const DEFAULT_MAX_BLOB: u64 = 64 << 30;

/// Attempts per range.
const ATTEMPTS: u32 = 3;

/// Why the blob could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("blob service {endpoint}: {source}")]
    Io {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("blob service {endpoint}: {source}")]
    Control {
        endpoint: String,
        source: ControlError,
    },
    #[error("the host refused blob {name:?}: {code}: {message}")]
    Refused {
        name: String,
        code: String,
        message: String,
    },
    #[error("the host answered {got} where {expected} was expected")]
    Unexpected { expected: &'static str, got: String },
    #[error("the host announces {len} bytes for {name:?}, above the {max}-byte limit")]
    TooLarge { name: String, len: u64, max: u64 },
    #[error("cannot reserve {0} bytes of guest memory for the sealed model")]
    Memory(u64),
    #[error("object store {url}: {message}")]
    Http { url: String, message: String },
}

/// Where sealed models come from: the host's blob service (a VM's host
/// shim), an HTTP(S) object store or a mounted volume (a Kubernetes pod
/// has no host shim). All are untrusted alike: only the sealed format's
/// authentication makes their bytes a model.
#[derive(Debug, Clone)]
pub enum ModelSource {
    Blob(Endpoint),
    ObjectStore(super::object_store::ObjectStore),
    /// `file:DIR`: sealed models are files in DIR (a volume).
    Directory(std::path::PathBuf),
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Blob(ep) => write!(f, "{ep}"),
            ModelSource::ObjectStore(s) => write!(f, "{}", s.base),
            ModelSource::Directory(d) => write!(f, "file:{}", d.display()),
        }
    }
}

impl ModelSource {
    /// `http(s)://…` is an object store (`ca_pem` for https); anything else
    /// a transport address of a blob service.
    pub fn parse(text: &str, ca_pem: Option<Vec<u8>>) -> Result<Self, String> {
        if text.starts_with("http://") || text.starts_with("https://") {
            return super::object_store::ObjectStore::new(text, ca_pem)
                .map(ModelSource::ObjectStore)
                .map_err(|e| e.to_string());
        }
        if ca_pem.is_some() {
            return Err(format!(
                "{text}: a CA for the model source is only for https:// object stores"
            ));
        }
        if let Some(dir) = text.strip_prefix("file:") {
            let dir = std::path::PathBuf::from(dir);
            if !dir.is_absolute() {
                return Err(format!("{text}: file: needs an absolute directory"));
            }
            return Ok(ModelSource::Directory(dir));
        }
        text.parse::<Endpoint>()
            .map(ModelSource::Blob)
            .map_err(|e| format!("{text}: {e}"))
    }

    /// The whole sealed blob `name`, `parallel` ranges at a time.
    pub async fn fetch(&self, name: &str, parallel: usize) -> Result<Vec<u8>, FetchError> {
        match self {
            ModelSource::Blob(ep) => fetch_blob(ep, name, parallel).await,
            ModelSource::ObjectStore(store) => {
                let (store, name) = (store.clone(), name.to_string());
                tokio::task::spawn_blocking(move || store.fetch(&name, parallel, DEFAULT_MAX_BLOB))
                    .await
                    .map_err(|e| FetchError::Http {
                        url: e.to_string(),
                        message: "the fetch task failed".into(),
                    })?
            }
            ModelSource::Directory(dir) => {
                let (dir, name) = (dir.clone(), name.to_string());
                tokio::task::spawn_blocking(move || read_file(&dir, &name, DEFAULT_MAX_BLOB))
                    .await
                    .map_err(|e| FetchError::Io {
                        endpoint: e.to_string(),
                        source: std::io::Error::other("the read task failed"),
                    })?
            }
        }
    }
}

/// The sealed model `name` from the volume at `dir`: a plain file name
/// (no path), at most `max` bytes, memory reserved before it is read.
fn read_file(dir: &std::path::Path, name: &str, max: u64) -> Result<Vec<u8>, FetchError> {
    let io = |source| FetchError::Io {
        endpoint: format!("file:{}/{name}", dir.display()),
        source,
    };
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a plain file name is expected (letters, digits, '.', '_', '-'; not starting with '.')",
        )));
    }
    let mut file = std::fs::File::open(dir.join(name)).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > max {
        return Err(FetchError::TooLarge {
            name: name.to_string(),
            len,
            max,
        });
    }
    let mut buf = Vec::new();
    buf.try_reserve_exact(usize::try_from(len).map_err(|_| FetchError::Memory(len))?)
        .map_err(|_| FetchError::Memory(len))?;
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, max), &mut buf).map_err(io)?;
    Ok(buf)
}

async fn exchange(
    ep: &Endpoint,
    msg: &Message,
) -> Result<(ciel_transport::Stream, Message), FetchError> {
    let io = |source| FetchError::Io {
        endpoint: ep.to_string(),
        source,
    };
    let ctl = |source| FetchError::Control {
        endpoint: ep.to_string(),
        source,
    };
    let mut s = ciel_transport::connect(ep).await.map_err(io)?;
    s.write_all(&control::encode(msg).map_err(ctl)?)
        .await
        .map_err(io)?;
    let mut header = [0u8; 4];
    s.read_exact(&mut header).await.map_err(io)?;
    let mut body = vec![0u8; control::frame_len(header).map_err(ctl)?];
    s.read_exact(&mut body).await.map_err(io)?;
    let reply = control::decode(&body).map_err(ctl)?;
    if let Message::Error { code, message } = reply {
        let name = match msg {
            Message::BlobStat { name } | Message::BlobRead { name, .. } => name.clone(),
            _ => String::new(),
        };
        return Err(FetchError::Refused {
            name,
            code,
            message,
        });
    }
    Ok((s, reply))
}

fn describe(m: &Message) -> String {
    match m {
        Message::BlobStat { .. } => "blob_stat",
        Message::BlobRead { .. } => "blob_read",
        Message::BlobInfo { .. } => "blob_info",
        Message::BlobData { .. } => "blob_data",
        Message::Error { .. } => "error",
    }
    .to_string()
}

async fn read_range(
    ep: &Endpoint,
    name: &str,
    offset: u64,
    out: &mut [u8],
) -> Result<(), FetchError> {
    let len = out.len() as u64;
    let req = Message::BlobRead {
        name: name.to_string(),
        offset,
        len,
    };
    let (mut s, reply) = exchange(ep, &req).await?;
    match reply {
        Message::BlobData { offset: o, len: l } if o == offset && l == len => {}
        other => {
            return Err(FetchError::Unexpected {
                expected: "blob_data for the range asked",
                got: describe(&other),
            });
        }
    }
    s.read_exact(out).await.map_err(|source| FetchError::Io {
        endpoint: ep.to_string(),
        source,
    })?;
    Ok(())
}

/// The whole blob `name`, read with `parallel` connections at once.
pub async fn fetch_blob(ep: &Endpoint, name: &str, parallel: usize) -> Result<Vec<u8>, FetchError> {
    fetch_blob_capped(ep, name, parallel, DEFAULT_MAX_BLOB).await
}

/// [`fetch_blob`] with an explicit size limit.
pub async fn fetch_blob_capped(
    ep: &Endpoint,
    name: &str,
    parallel: usize,
    max: u64,
) -> Result<Vec<u8>, FetchError> {
    let (_, info) = exchange(
        ep,
        &Message::BlobStat {
            name: name.to_string(),
        },
    )
    .await?;
    let len = match info {
        Message::BlobInfo { name: n, len } if n == name => len,
        other => {
            return Err(FetchError::Unexpected {
                expected: "blob_info",
                got: describe(&other),
            });
        }
    };
    if len > max {
        return Err(FetchError::TooLarge {
            name: name.to_string(),
            len,
            max,
        });
    }
    let mut buf = Vec::new();
    buf.try_reserve_exact(len as usize)
        .map_err(|_| FetchError::Memory(len))?;
    buf.resize(len as usize, 0);
    // Ranges of at most MAX_BLOB_READ, about `parallel` in flight.
    let parallel = parallel.max(1);
    let range = (len / parallel as u64 + 1).clamp(1 << 20, MAX_BLOB_READ) as usize;
    let mut jobs = Vec::new();
    for (i, part) in buf.chunks_mut(range).enumerate() {
        let offset = (i * range) as u64;
        jobs.push(async move {
            let mut attempt = 1;
            loop {
                match read_range(ep, name, offset, part).await {
                    Ok(()) => return Ok(()),
                    Err(e @ FetchError::Refused { .. }) => return Err(e),
                    Err(e) if attempt >= ATTEMPTS => return Err(e),
                    Err(e) => {
                        tracing::warn!(offset, attempt, error = %e, "blob range failed; retrying");
                        attempt += 1;
                    }
                }
            }
        });
    }
    // Bounded concurrency: `parallel` ranges at a time.
    use futures_util::StreamExt;
    let mut results = futures_util::stream::iter(jobs).buffer_unordered(parallel);
    while let Some(r) = results.next().await {
        r?;
    }
    drop(results);
    Ok(buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_gives_plain_files_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.csm"), b"sealed bytes").unwrap();
        let src = ModelSource::parse(&format!("file:{}", dir.path().display()), None).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(
            rt.block_on(src.fetch("model.csm", 4)).unwrap(),
            b"sealed bytes"
        );
        for bad in ["../model.csm", "sub/model.csm", ".hidden", ""] {
            assert!(rt.block_on(src.fetch(bad, 4)).is_err(), "{bad:?}");
        }
        assert!(matches!(
            read_file(dir.path(), "model.csm", 4),
            Err(FetchError::TooLarge { len: 12, .. })
        ));
        assert!(rt.block_on(src.fetch("absent.csm", 4)).is_err());
        assert!(ModelSource::parse("file:relative/dir", None).is_err());
        assert!(ModelSource::parse("file:/models", Some(b"pem".to_vec())).is_err());
    }
    use ciel_transport::Listener;

    /// A hostile blob service: answers `blob_stat` truthfully about a blob
    /// of `len` bytes, then misbehaves on reads as `lie` says.
    #[derive(Clone, Copy)]
    enum Lie {
        None,
        WrongOffset,
        ShortThenClose,
        HugeFrame,
        Refuse,
    }

    async fn hostile_host(ep: Endpoint, len: u64, lie: Lie) {
        let l = Listener::bind(&ep).await.unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut h = [0u8; 4];
                    s.read_exact(&mut h).await.unwrap();
                    let mut body = vec![0u8; control::frame_len(h).unwrap()];
                    s.read_exact(&mut body).await.unwrap();
                    let reply = match control::decode(&body).unwrap() {
                        Message::BlobStat { name } => Message::BlobInfo { name, len },
                        Message::BlobRead { offset, len, .. } => match lie {
                            Lie::None | Lie::ShortThenClose => Message::BlobData { offset, len },
                            Lie::WrongOffset => Message::BlobData {
                                offset: offset + 1,
                                len,
                            },
                            Lie::Refuse => Message::Error {
                                code: "not_found".into(),
                                message: "gone".into(),
                            },
                            Lie::HugeFrame => {
                                let _ = s.write_all(&u32::MAX.to_be_bytes()).await;
                                return;
                            }
                        },
                        other => panic!("{other:?}"),
                    };
                    s.write_all(&control::encode(&reply).unwrap())
                        .await
                        .unwrap();
                    if let Message::BlobData { offset, len } = reply {
                        let data: Vec<u8> = (offset..offset + len).map(|i| i as u8).collect();
                        let n = if matches!(lie, Lie::ShortThenClose) {
                            data.len() / 2
                        } else {
                            data.len()
                        };
                        let _ = s.write_all(&data[..n]).await;
                    }
                });
            }
        });
    }

    #[tokio::test]
    async fn every_lie_of_the_host_is_an_error_and_the_truth_arrives_whole() {
        let dir = tempfile::tempdir().unwrap();
        let len = 3 << 20;
        for (i, lie) in [
            Lie::None,
            Lie::WrongOffset,
            Lie::ShortThenClose,
            Lie::HugeFrame,
            Lie::Refuse,
        ]
        .into_iter()
        .enumerate()
        {
            let ep = Endpoint::Unix {
                path: dir.path().join(format!("b{i}.sock")),
                connect: None,
            };
            hostile_host(ep.clone(), len, lie).await;
            let got = fetch_blob(&ep, "m.csm", 3).await;
            match lie {
                Lie::None => {
                    let got = got.unwrap();
                    assert_eq!(got.len() as u64, len);
                    assert!(got.iter().enumerate().all(|(i, &b)| b == i as u8));
                }
                Lie::WrongOffset => {
                    assert!(matches!(got, Err(FetchError::Unexpected { .. })), "{got:?}")
                }
                Lie::ShortThenClose => {
                    assert!(matches!(got, Err(FetchError::Io { .. })), "{got:?}")
                }
                Lie::HugeFrame => {
                    assert!(matches!(got, Err(FetchError::Control { .. })), "{got:?}")
                }
                Lie::Refuse => assert!(matches!(got, Err(FetchError::Refused { .. })), "{got:?}"),
            }
        }
    }

    #[tokio::test]
    async fn an_announced_size_above_the_limit_is_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let ep = Endpoint::Unix {
            path: dir.path().join("big.sock"),
            connect: None,
        };
        hostile_host(ep.clone(), u64::MAX, Lie::None).await;
        let got = fetch_blob(&ep, "m.csm", 2).await;
        assert!(
            matches!(got, Err(FetchError::TooLarge { len: u64::MAX, .. })),
            "{got:?}"
        );
    }
}
