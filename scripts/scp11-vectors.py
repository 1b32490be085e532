#!/usr/bin/env python3
"""Known-answer vectors for keyroll's SCP11b key agreement and SCP03 secure messaging, computed with
Python `cryptography` (an implementation keyroll did not write), following GlobalPlatform Card
Specification v2.3 Amendment F (SCP11) §3.1 and Amendment D (SCP03) §6.2 the way Yubico's yubikit does.

Usage: python3 scripts/scp11-vectors.py > src/crypto/scp11_vectors.json
"""
import json
from cryptography.hazmat.primitives import cmac, hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF


def key(byte):
    return ec.derive_private_key(int.from_bytes(bytes([byte]) * 32, "big"), ec.SECP256R1())


def point(k):
    return k.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def mac(k, *parts):
    c = cmac.CMAC(algorithms.AES(k))
    for p in parts:
        c.update(p)
    return c.finalize()


def aes_ecb(k, block):
    e = Cipher(algorithms.AES(k), modes.ECB()).encryptor()
    return e.update(block) + e.finalize()


def cbc(k, iv, data):
    e = Cipher(algorithms.AES(k), modes.CBC(iv)).encryptor()
    return e.update(data) + e.finalize()


def pad(d):
    d = d + b"\x80"
    return d + b"\x00" * (-len(d) % 16)


card_static, line_eph, card_eph = key(0x11), key(0x22), key(0x33)
crt = bytes.fromhex("A60D900211009501 3C80018881 0110".replace(" ", ""))
command_data = crt + b"\x5f\x49\x41" + point(line_eph)
epk_sd_tlv = b"\x5f\x49\x41" + point(card_eph)
sh_see = line_eph.exchange(ec.ECDH(), card_eph.public_key())
sh_ses = line_eph.exchange(ec.ECDH(), card_static.public_key())
keys = X963KDF(hashes.SHA256(), 80, bytes([0x3C, 0x88, 0x10])).derive(sh_see + sh_ses)
receipt_key, s_enc, s_mac, s_rmac, s_dek = (keys[i : i + 16] for i in range(0, 80, 16))
receipt = mac(receipt_key, command_data + epk_sd_tlv)
response = epk_sd_tlv + b"\x86\x10" + receipt

out = {
    "command_data": command_data.hex(),
    "response": response.hex(),
    "receipt": receipt.hex(),
    "s_enc": s_enc.hex(),
    "s_mac": s_mac.hex(),
    "s_rmac": s_rmac.hex(),
    "s_dek": s_dek.hex(),
}

chain = receipt
for n, (hdr, data, answer, name) in enumerate(
    [(bytes([0x84, 0xE2, 0x01, 0x00]), b"keyroll perso item", b"answer", "1"), (bytes([0x84, 0xE8, 0x00, 0x00]), b"", b"\x01\x02", "2")],
    start=1,
):
    counter = n.to_bytes(16, "big")
    enc = cbc(s_enc, aes_ecb(s_enc, counter), pad(data)) if data else b""
    full = mac(s_mac, chain, hdr, bytes([len(enc) + 8]), enc)
    chain = full
    out["command" + name] = (enc + full[:8]).hex()
    riv = aes_ecb(s_enc, b"\x80" + counter[1:])
    renc = cbc(s_enc, riv, pad(answer)) if answer else b""
    rmac = mac(s_rmac, chain, renc, b"\x90\x00")
    out["response" + name] = (renc + rmac[:8]).hex()

print(json.dumps(out, indent=2))
