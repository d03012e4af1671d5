//! Writes the synthetic models (`ciel_engine::synthetic`) into a folder, for
//! `scripts/llamacpp-reference.py --synthetic`.
//! `cargo run -p ciel-engine --features testing --example synthetic-gguf -- DIR`

use ciel_engine::synthetic::{
    ARCHS, WEIGHT_TYPES, file_name, gguf, llama_with_rope_freqs, phi3_with_long_rope,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .ok_or("usage: synthetic-gguf DIR")?;
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir)?;
    for &arch in ARCHS {
        for (name, dtype) in WEIGHT_TYPES {
            let path = dir.join(file_name(arch, name));
            std::fs::write(&path, gguf(arch, *dtype)?)?;
            println!("{}", path.display());
        }
    }
    for (name, bytes) in [
        llama_with_rope_freqs()?,
        phi3_with_long_rope(16)?,
        phi3_with_long_rope(512)?,
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        println!("{}", path.display());
    }
    Ok(())
}
