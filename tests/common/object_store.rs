//! An HTTP object store on loopback that serves byte ranges of the files in
//! one directory, honestly or in one of the ways a hostile store might not.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// How the store answers range requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)]
pub enum Behaviour {
    Honest,
    /// Ignores `Range` and sends the whole object with 200.
    IgnoresRanges,
    /// Answers with another range than the one asked for.
    WrongRange,
    /// Flips one byte of every range.
    Corrupts,
}

struct Store {
    dir: std::path::PathBuf,
    behaviour: Behaviour,
}

/// Serves `dir` at `http://ADDR/models/NAME` until the returned sender drops.
pub fn serve(
    dir: &std::path::Path,
    behaviour: Behaviour,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let store = Arc::new(Store {
        dir: dir.to_path_buf(),
        behaviour,
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let app = axum::Router::new()
                .route("/models/{*name}", axum::routing::get(object))
                .with_state(store);
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
    });
    (addr_rx.recv().unwrap(), tx)
}

async fn object(
    State(store): State<Arc<Store>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if name.contains("..") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let Ok(bytes) = std::fs::read(store.dir.join(&name)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let len = bytes.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
    let Some((first, last)) = range.filter(|_| store.behaviour != Behaviour::IgnoresRanges) else {
        return (StatusCode::OK, bytes).into_response();
    };
    if first > last || last >= len {
        return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
    }
    let (first, last) = if store.behaviour == Behaviour::WrongRange && first > 0 {
        (first - 1, last - 1)
    } else {
        (first, last)
    };
    let mut body = bytes[first as usize..=last as usize].to_vec();
    if store.behaviour == Behaviour::Corrupts && first > 0 {
        body[0] ^= 1;
    }
    (
        StatusCode::PARTIAL_CONTENT,
        [(header::CONTENT_RANGE, format!("bytes {first}-{last}/{len}"))],
        body,
    )
        .into_response()
}
