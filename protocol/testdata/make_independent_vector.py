#!/usr/bin/env python3
"""Seals a known plaintext following docs/sealed-model.md alone, with the
`cryptography` package's AES-GCM: an independent implementation whose
output the Rust reader must accept (tests/sealed_tamper.rs).

Key: 32 bytes of 0x03. Plaintext: byte i = (7*i) mod 256, 10000 bytes.
Chunk size 4096, nonce prefix 00 01 02 03 04 05 06.
"""
import hashlib, json, struct, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

key = bytes([3]) * 32
plain = bytes((i * 7) % 256 for i in range(10000))
chunk, prefix = 4096, bytes(range(7))
header = {
    "alg": "AES-256-GCM-STREAM", "chunk_size": chunk,
    "model": {"format": "raw", "name": "seed"},
    "nonce_prefix": prefix.hex(), "plaintext_len": len(plain),
    "plaintext_sha256": hashlib.sha256(plain).hexdigest(),
    "resource": "default/model-key/seed",
}
# RFC 8785 for these ASCII keys and values: sorted keys, no whitespace.
body = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
region = b"\x89CSM\r\n\x1a\n" + struct.pack(">HI", 1, len(body)) + body
aad = hashlib.sha256(region).digest()
n = max(1, -(-len(plain) // chunk))
out = bytearray(region)
for i in range(n):
    nonce = prefix + struct.pack(">I", i) + bytes([1 if i == n - 1 else 0])
    out += AESGCM(key).encrypt(nonce, plain[i * chunk:(i + 1) * chunk], aad)
sys.stdout.buffer.write(out)
