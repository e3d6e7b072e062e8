//! PNG building blocks for media tests that write images by hand (no image crate in the test
//! harness): the signature, chunk framing with its CRC-32, and zlib's Adler-32. Each test
//! shapes its own images from these; the server decodes them with a real decoder.

/// The eight bytes every PNG starts with.
pub const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// CRC-32 (IEEE), as PNG chunks carry it over their type and data.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffff_u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Adler-32, the checksum closing a zlib stream (a PNG's `IDAT` data).
pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1_u32, 0_u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// Appends one chunk: length, type, data, CRC.
pub fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let len = u32::try_from(data.len()).expect("test chunks are small");
    out.extend_from_slice(&len.to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}
