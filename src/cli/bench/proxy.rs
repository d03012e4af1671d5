//! `proxy`: bytes through the host shim (client → shim → guest socket, Unix
//! sockets as in development) against the same stream sent straight to the
//! guest socket: throughput ratio, and the latency the extra hop adds to a
//! one-byte round trip.

use super::{Report, percentile_ms};
use anyhow::{Context, Result};
use ciel_host::metrics::Metrics;
use ciel_host::shim::{ShimConfig, run as run_shim};
use ciel_transport::{Endpoint, Listener, connect};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The stand-in guest: after a mode byte, `T` reads to the end and answers
/// the byte count; `E` echoes every byte.
async fn guest(l: Listener) {
    while let Ok((mut s, _)) = l.accept().await {
        tokio::spawn(async move {
            let mut mode = [0u8; 1];
            if s.read_exact(&mut mode).await.is_err() {
                return;
            }
            let mut buf = vec![0u8; 256 << 10];
            let mut total = 0u64;
            loop {
                let n = match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                total += n as u64;
                if mode[0] == b'E' && s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            let _ = s.write_all(&total.to_be_bytes()).await;
        });
    }
}

async fn throughput(to: &Endpoint, bytes: usize) -> Result<Duration> {
    let block = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut s = connect(to).await?;
    s.write_all(b"T").await?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len());
        s.write_all(&block[..n]).await?;
        left -= n;
    }
    s.shutdown().await?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count).await?;
    anyhow::ensure!(
        u64::from_be_bytes(count) == bytes as u64,
        "bytes lost on the way"
    );
    Ok(start.elapsed())
}

async fn round_trips(to: &Endpoint, n: usize) -> Result<Vec<Duration>> {
    let mut s = connect(to).await?;
    s.write_all(b"E").await?;
    let mut b = [0u8; 1];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(b"x").await?;
        s.read_exact(&mut b).await?;
        out.push(t.elapsed());
    }
    Ok(out)
}

pub fn run(r: &mut Report) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let unix = |name: &str| Endpoint::Unix {
        path: dir.path().join(name),
        connect: None,
    };
    let (direct, front) = (unix("guest.sock"), unix("front.sock"));
    let bytes = if r.quick { 256 << 20 } else { 2 << 30 };
    let runs = if r.quick { 3 } else { 5 };
    let trips = if r.quick { 2_000 } else { 20_000 };
    rt.block_on(async {
        tokio::spawn(guest(Listener::bind(&direct).await?));
        let cfg = ShimConfig {
            listen: vec![front.clone()],
            guest_api: direct.clone(),
            blobs: None,
            kbs_relay: None,
            collateral: None,
            max_connections: 64,
            idle_timeout: Duration::from_secs(60),
            grace: Duration::from_secs(1),
        };
        tokio::spawn(run_shim(
            cfg,
            Arc::new(Metrics::default()),
            std::future::pending(),
        ));
        // Wait for the shim's socket.
        for _ in 0..100 {
            if connect(&front).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (mut d, mut p) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            d.push(throughput(&direct, bytes).await.context("direct")?);
            p.push(
                throughput(&front, bytes)
                    .await
                    .context("through the shim")?,
            );
        }
        let gib =
            |v: &[Duration]| bytes as f64 / (1u64 << 30) as f64 / (percentile_ms(v, 50.0) / 1e3);
        let (dg, pg) = (gib(&d), gib(&p));
        r.add("proxy", "direct Unix socket", dg, "GiB/s");
        r.compare(
            "proxy",
            "through the host shim",
            pg,
            "GiB/s",
            pg / dg,
            "direct socket",
        );
        // Interleaved, so drift in the machine's load hits both alike.
        let (mut dl, mut pl) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            dl.extend(round_trips(&direct, trips / 10).await?);
            pl.extend(round_trips(&front, trips / 10).await?);
        }
        let (d50, p50) = (percentile_ms(&dl, 50.0), percentile_ms(&pl, 50.0));
        r.add("proxy", "1-byte round trip, direct: p50", d50 * 1e3, "us");
        r.compare(
            "proxy",
            "1-byte round trip, via shim: p50",
            p50 * 1e3,
            "us",
            d50 / p50,
            "direct (latency ratio)",
        );
        r.add(
            "proxy",
            "latency the shim adds: p50",
            (p50 - d50) * 1e3,
            "us",
        );
        Ok::<_, anyhow::Error>(())
    })
}
