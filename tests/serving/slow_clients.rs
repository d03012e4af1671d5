//! The guest API's one server loop under clients that connect and then say
//! nothing, or drip their TLS handshake: an attested client arriving after
//! them verifies the guest and is answered at once.

use super::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// `n` silent connections and `n` dripping a TLS record header one byte
/// every 50 ms, made by `connect`; they stop when the flag is set.
fn attack<S: Write + Send + 'static>(n: usize, connect: impl Fn() -> S) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let silent: Vec<S> = (0..n).map(|_| connect()).collect();
    let mut drippers: Vec<S> = (0..n).map(|_| connect()).collect();
    let flag = stop.clone();
    std::thread::spawn(move || {
        for b in [0x16u8, 0x03, 0x01].iter().cycle() {
            if flag.load(Ordering::Relaxed) {
                break;
            }
            for d in &mut drippers {
                let _ = d.write_all(&[*b]);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(silent);
    });
    stop
}

pub fn silent_and_dripping_clients_do_not_delay_an_attested_client(
    sys: &System,
    rt: &tokio::runtime::Runtime,
) {
    // 100 silent and 100 dripping clients, half straight at the guest's API
    // socket, half through the host shim (200 guest connections in all,
    // within the guest's default cap of 256).
    let guest_api = PathBuf::from(sys.s("guest_api").trim_start_matches("unix:"));
    let at_guest = attack(50, move || {
        std::os::unix::net::UnixStream::connect(&guest_api).unwrap()
    });
    let front = sys.s("url");
    let front = front.trim_start_matches("https://").to_string();
    let at_shim = attack(50, move || std::net::TcpStream::connect(&front).unwrap());
    // The shim has taken the 100 it carries (the guest accepts its own
    // socket's in the order they came, ahead of the honest client's).
    let open = || -> u64 {
        let text = ureq::get(sys.s("metrics"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("ciel_host_connections_active{service=\"api\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let until = Instant::now() + Duration::from_secs(20);
    while open() < 100 {
        assert!(
            Instant::now() < until,
            "the shim took only {} of the 100",
            open()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..3 {
        let t0 = Instant::now();
        let client = rt
            .block_on(Client::connect(&sys.s("url"), sys.policy()))
            .unwrap();
        let models = rt.block_on(client.models()).unwrap();
        let took = t0.elapsed();
        assert_eq!(models["data"][0]["id"], "smollm2-135m-instruct");
        assert!(
            took < Duration::from_secs(1),
            "connect, verify and list models took {took:?} behind 200 silent and slow clients"
        );
    }
    at_guest.store(true, Ordering::Relaxed);
    at_shim.store(true, Ordering::Relaxed);
}
