//! A reproducible OCI image for running ciel as a container (a Kata
//! Confidential Containers pod's workload): the static `ciel` binary on an
//! empty base, written straight as an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/…`) that `podman`, `skopeo` and registries
//! read. Every byte is a function of the inputs: tar entries in a fixed
//! order with zero timestamps and owners, gzip without a name or time, and
//! `created` fixed at the epoch — so anyone rebuilding from the same binary
//! gets the same image digest, which is what pod policies pin.

use std::collections::BTreeMap;
use std::io::Write;

pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Every timestamp in the image.
pub const EPOCH: &str = "1970-01-01T00:00:00Z";
/// The unprivileged user the container runs as (distroless' `nonroot`).
pub const USER: &str = "65532:65532";

/// What goes into the image.
#[derive(Debug, Clone)]
pub struct OciInputs {
    /// The `ciel` binary, statically linked: installed as `/ciel`.
    pub binary: Vec<u8>,
    /// The command after the entrypoint (`["enclave", "serve", …]`).
    pub cmd: Vec<String>,
    /// TCP ports the container serves on.
    pub ports: Vec<u16>,
    /// Labels (e.g. `org.opencontainers.image.source`).
    pub labels: BTreeMap<String, String>,
    /// The tag recorded in `index.json` (`org.opencontainers.image.ref.name`).
    pub tag: String,
}

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    #[error("writing the layer: {0}")]
    Layer(#[from] std::io::Error),
    #[error(
        "tag {0:?}: letters, digits, '.', '_' and '-' only, at most 128, not starting with '.' or '-'"
    )]
    Tag(String),
}

/// A built image: its blobs by digest and the index that names it.
#[derive(Debug, Clone)]
pub struct OciImage {
    /// `sha256:…` → bytes (layer, config, manifest).
    pub blobs: BTreeMap<String, Vec<u8>>,
    pub index: Vec<u8>,
    /// The image's digest: the manifest's (what `image@sha256:…` pins).
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digest: String,
}

fn digest(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The root file system as an uncompressed tar: `/ciel`, an empty `/tmp`
/// (sticky, world-writable) and `/etc/passwd` naming the unprivileged user.
fn layer_tar(binary: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut entry = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_path(path)?;
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        tar.append(&h, data)
    };
    let passwd =
        b"root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n";
    entry("ciel", tar::EntryType::Regular, 0o755, binary)?;
    entry("etc/", tar::EntryType::Directory, 0o755, &[])?;
    entry("etc/passwd", tar::EntryType::Regular, 0o644, passwd)?;
    entry("tmp/", tar::EntryType::Directory, 0o1777, &[])?;
    tar.into_inner()
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes)?;
    gz.finish()
}

fn json(value: &serde_json::Value) -> Vec<u8> {
    // Maps are sorted (serde_json without preserve_order): stable bytes.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Builds the image.
pub fn build(inputs: &OciInputs) -> Result<OciImage, OciError> {
    if !valid_tag(&inputs.tag) {
        return Err(OciError::Tag(inputs.tag.clone()));
    }
    let tar = layer_tar(&inputs.binary)?;
    let layer = gzip(&tar)?;
    let ports: serde_json::Map<String, serde_json::Value> = inputs
        .ports
        .iter()
        .map(|p| (format!("{p}/tcp"), serde_json::json!({})))
        .collect();
    let config = json(&serde_json::json!({
        "created": EPOCH,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": USER,
            "Entrypoint": ["/ciel"],
            "Cmd": inputs.cmd,
            "Env": ["HOME=/tmp"],
            "WorkingDir": "/",
            "ExposedPorts": ports,
            "Labels": inputs.labels,
        },
        "rootfs": { "type": "layers", "diff_ids": [digest(&tar)] },
        "history": [{ "created": EPOCH, "created_by": "ciel image oci" }],
    }));
    let manifest = json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": { "mediaType": MEDIA_CONFIG, "digest": digest(&config), "size": config.len() },
        "layers": [{ "mediaType": MEDIA_LAYER, "digest": digest(&layer), "size": layer.len() }],
        "annotations": { "org.opencontainers.image.created": EPOCH },
    }));
    let manifest_digest = digest(&manifest);
    let index = json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": inputs.tag },
        }],
    }));
    let (config_digest, layer_digest) = (digest(&config), digest(&layer));
    let blobs = BTreeMap::from([
        (layer_digest.clone(), layer),
        (config_digest.clone(), config),
        (manifest_digest.clone(), manifest),
    ]);
    Ok(OciImage {
        blobs,
        index,
        manifest_digest,
        config_digest,
        layer_digest,
    })
}

impl OciImage {
    /// Writes the OCI image layout into `dir` (created; must be empty or
    /// absent, so an old layout's blobs never mix in).
    pub fn write_layout(&self, dir: &std::path::Path) -> std::io::Result<()> {
        if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} is not empty", dir.display()),
            ));
        }
        let blobs = dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs)?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        std::fs::write(dir.join("index.json"), &self.index)?;
        for (d, bytes) in &self.blobs {
            let name = d.trim_start_matches("sha256:");
            std::fs::write(blobs.join(name), bytes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn inputs(binary: &[u8]) -> OciInputs {
        OciInputs {
            binary: binary.to_vec(),
            cmd: vec!["--help".into()],
            ports: vec![8443],
            labels: BTreeMap::from([("a".into(), "b".into())]),
            tag: "0.1.0".into(),
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_digest_and_any_change_another() {
        let a = build(&inputs(b"binary")).unwrap();
        let b = build(&inputs(b"binary")).unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_eq!(a.blobs, b.blobs);
        assert_ne!(
            build(&inputs(b"binarY")).unwrap().manifest_digest,
            a.manifest_digest
        );
        let mut other = inputs(b"binary");
        other.cmd.push("x".into());
        assert_ne!(build(&other).unwrap().manifest_digest, a.manifest_digest);
        // Each blob is stored under its own digest.
        for (d, bytes) in &a.blobs {
            assert_eq!(&digest(bytes), d);
        }
        let manifest: serde_json::Value =
            serde_json::from_slice(&a.blobs[&a.manifest_digest]).unwrap();
        assert_eq!(manifest["layers"][0]["digest"], a.layer_digest);
        assert_eq!(manifest["config"]["digest"], a.config_digest);
    }

    #[test]
    fn the_layer_holds_the_binary_with_fixed_metadata() {
        let img = build(&inputs(b"\x7fELF")).unwrap();
        let gz = &img.blobs[&img.layer_digest];
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut tar).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header().clone();
            assert_eq!((h.mtime().unwrap(), h.uid().unwrap()), (0, 0));
            let path = e.path().unwrap().to_string_lossy().into_owned();
            if path == "ciel" {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).unwrap();
                assert_eq!(data, b"\x7fELF");
                assert_eq!(h.mode().unwrap(), 0o755);
            }
            seen.push(path);
        }
        assert_eq!(seen, ["ciel", "etc/", "etc/passwd", "tmp/"]);
        let config: serde_json::Value =
            serde_json::from_slice(&img.blobs[&img.config_digest]).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], digest(&tar));
        assert_eq!(config["config"]["User"], USER);
        assert!(
            build(&OciInputs {
                tag: "-bad".into(),
                ..inputs(b"")
            })
            .is_err()
        );
    }
}
