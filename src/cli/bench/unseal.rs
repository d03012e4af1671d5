//! `unseal`: authenticated decryption of a sealed file in memory against
//! the physical baselines over the same bytes — `memcpy`, and bare `ring`
//! AES-256-GCM on one thread and on all threads — and the sealed model's
//! load into the engine against the plaintext load of the same model.

use super::{Report, gib_per_s, percentile_ms, sample};
use anyhow::{Context, Result};
use ciel_engine::model::Model;
use ciel_protocol::sealed::{
    DataKey, ModelInfo, SealParams, UnsealOptions, seal, unseal_in_memory,
};
use rayon::prelude::*;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

const CHUNK: usize = 1 << 20;

fn seal_bytes(plain: &[u8], key: &DataKey) -> Result<Vec<u8>> {
    let sha: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, plain)
        .as_ref()
        .try_into()
        .unwrap_or([0; 32]);
    let params = SealParams {
        resource: "bench/model-key/x".into(),
        model: ModelInfo {
            name: "bench".into(),
            format: "raw".into(),
        },
        chunk_size: CHUNK as u32,
    };
    let mut out = Vec::with_capacity(plain.len() + plain.len() / CHUNK * 16 + 4096);
    seal(
        &mut &plain[..],
        plain.len() as u64,
        sha,
        key,
        &params,
        &mut out,
        |_| {},
    )?;
    Ok(out)
}

fn nonce(i: usize) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&(i as u64).to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// One input: its figures.
fn measure(r: &mut Report, what: &str, plain: &[u8]) -> Result<()> {
    let runs = if r.quick { 3 } else { 5 };
    let key = DataKey::from_bytes([7; 32]);
    let sealed = seal_bytes(plain, &key)?;
    let aead = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &[7; 32]).map_err(|_| anyhow::anyhow!("AES key"))?,
    );
    // The baselines' ciphertext: the same bytes as independent GCM chunks
    // (tag after each), laid out like the sealed body.
    let stride = CHUNK + 16;
    let mut gcm = Vec::with_capacity(plain.len() / CHUNK * stride + stride);
    for (i, p) in plain.chunks(CHUNK).enumerate() {
        let mut c = p.to_vec();
        aead.seal_in_place_append_tag(nonce(i), Aad::empty(), &mut c)
            .map_err(|_| anyhow::anyhow!("seal"))?;
        gcm.extend_from_slice(&c);
    }
    let open = |i: usize, c: &mut [u8]| {
        let _ = std::hint::black_box(aead.open_in_place(nonce(i), Aad::empty(), c).is_ok());
    };

    let mut dst = vec![0u8; plain.len()];
    let memcpy = sample(runs, || dst.copy_from_slice(plain));
    drop(dst);
    // Baselines decrypt in place: each run refills the warm buffer first,
    // and that copy's time is taken out again.
    let mut work = gcm.clone();
    let copy_only = sample(runs, || work.copy_from_slice(&gcm));
    let one = sample(runs, || {
        work.copy_from_slice(&gcm);
        for (i, c) in work.chunks_mut(stride).enumerate() {
            open(i, c);
        }
    });
    let all = sample(runs, || {
        work.copy_from_slice(&gcm);
        work.par_chunks_mut(stride)
            .enumerate()
            .for_each(|(i, c)| open(i, c));
    });
    drop((work, gcm));
    let net = |v: &[std::time::Duration]| -> f64 {
        let ms = percentile_ms(v, 50.0) - percentile_ms(&copy_only, 50.0);
        plain.len() as f64 / (1u64 << 30) as f64 / (ms.max(1e-3) / 1e3)
    };
    let (one, all) = (net(&one), net(&all));
    // ciel unseals in place too: its inputs are copied (and faulted in)
    // before the clock starts, and the plaintexts (zeroized when dropped)
    // are dropped after it stops.
    let options = UnsealOptions {
        verify_plaintext_digest: false,
        ..UnsealOptions::default()
    };
    let mut inputs: Vec<Vec<u8>> = (0..runs).map(|_| sealed.clone()).collect();
    let mut outputs = Vec::with_capacity(runs);
    let ciel = sample(runs, || {
        let input = inputs.pop().unwrap_or_default();
        if let Ok(p) = unseal_in_memory(input, &key, options) {
            outputs.push(p);
        }
    });
    anyhow::ensure!(outputs.len() == runs, "unsealing failed");
    drop(outputs);
    let ciel = gib_per_s(plain.len(), &ciel);
    r.add(
        "unseal",
        format!("{what}: memcpy"),
        gib_per_s(plain.len(), &memcpy),
        "GiB/s",
    );
    r.add(
        "unseal",
        format!("{what}: ring AES-256-GCM, 1 thread"),
        one,
        "GiB/s",
    );
    r.compare(
        "unseal",
        format!("{what}: ring AES-256-GCM, all threads"),
        all,
        "GiB/s",
        all / one,
        "ring 1 thread",
    );
    r.compare(
        "unseal",
        format!("{what}: ciel unseal (authenticated, in memory)"),
        ciel,
        "GiB/s",
        ciel / all,
        "ring all threads",
    );
    Ok(())
}

pub fn run(r: &mut Report) -> Result<()> {
    let (_, model) = r.read_model()?;
    measure(r, "demo model", &model)?;
    if !r.quick {
        let big: Vec<u8> = (0..2usize << 30)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        measure(r, "2 GiB generated", &big)?;
    }

    // Loading: plaintext from memory vs the guest's path (unseal in memory,
    // load with the digest re-checked beside it).
    let runs = if r.quick { 3 } else { 5 };
    let (p, s) = load_times(&model, runs, ciel_engine::device::ComputeDevice::Cpu)?;
    r.add("unseal", "plaintext model load (from memory)", p, "ms");
    r.compare(
        "unseal",
        "sealed model load (unseal + load + digest)",
        s,
        "ms",
        p / s,
        "plaintext load (1.0 = free)",
    );
    Ok(())
}

/// Median milliseconds of `runs` loads of `model` onto `device` (ours on
/// the CPU, candle's elsewhere): from plaintext bytes, and the guest's way
/// (unseal in memory, then load with the digest re-checked beside it).
pub(super) fn load_times(
    model: &[u8],
    runs: usize,
    device: ciel_engine::device::ComputeDevice,
) -> Result<(f64, f64)> {
    use ciel_engine::device::ComputeDevice;
    use ciel_engine::model::Kernels;
    let kernels = match device {
        ComputeDevice::Cpu => Kernels::Ciel,
        ComputeDevice::Cuda(_) => Kernels::Candle,
    };
    let key = DataKey::from_bytes([9; 32]);
    let sealed = seal_bytes(model, &key)?;
    let load = || Model::load_on(&mut std::io::Cursor::new(model), kernels, device);
    load().with_context(|| format!("loading the model onto {device}"))?;
    let plain_load = sample(runs, || {
        let _ = std::hint::black_box(load().is_ok());
    });
    let options = UnsealOptions {
        verify_plaintext_digest: false,
        ..UnsealOptions::default()
    };
    // Copies made before the clock starts: the guest unseals in place.
    let mut inputs: Vec<Vec<u8>> = (0..runs).map(|_| sealed.clone()).collect();
    let sealed_load = sample(runs, || {
        let input = inputs.pop().unwrap_or_default();
        if let Ok(p) = unseal_in_memory(input, &key, options) {
            let _ = std::hint::black_box(
                ciel_enclave::sealed_model::load_unsealed_on(&p, device).is_ok(),
            );
        }
    });
    Ok((
        percentile_ms(&plain_load, 50.0),
        percentile_ms(&sealed_load, 50.0),
    ))
}
