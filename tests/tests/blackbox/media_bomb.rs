//! A decompression bomb cannot blow up the server's memory through thumbnailing: a PNG of a
//! few hundred KB declaring 4,990 × 4,990 RGBA (a 95 MiB decoded image, under the pixel limit)
//! is refused with 413 `M_TOO_LARGE` and a reason from its header alone, however many
//! thumbnail sizes of it are asked for at once, and the server's peak RSS barely moves.

use std::thread;

use tests::png;
use tests::{Client, TestEnv, enc};

const SIDE: u32 = 4990;

/// Bits written least-significant first, as DEFLATE packs them.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u64,
    len: u32,
}

impl Bits {
    fn put(&mut self, value: u32, len: u32) {
        self.acc |= u64::from(value) << self.len;
        self.len += len;
        while self.len >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.len -= 8;
        }
    }

    /// A Huffman code, which DEFLATE stores most-significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        let reversed = code.reverse_bits() >> (32 - len);
        self.put(reversed, len);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.len > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// A zlib stream of `n` zero bytes: one fixed-Huffman block of <length 258, distance 1>
/// copies, 13 bits per 258 bytes.
fn zlib_zeros(n: u64) -> Vec<u8> {
    let mut bits = Bits::default();
    bits.put(1, 1); // BFINAL
    bits.put(1, 2); // BTYPE = fixed Huffman
    let literal_zero = |bits: &mut Bits| bits.code(0x30, 8);
    literal_zero(&mut bits);
    let copies = (n - 1) / 258;
    for _ in 0..copies {
        bits.code(0xC5, 8); // length code 285: 258 bytes
        bits.code(0, 5); // distance code 0: 1 byte back
    }
    for _ in 0..(n - 1) % 258 {
        literal_zero(&mut bits);
    }
    bits.code(0, 7); // end of block
    let mut out = vec![0x78, 0x01];
    out.extend(bits.finish());
    // Adler-32 of zeros: a stays 1, b adds 1 per byte.
    let adler = (((n % 65521) as u32) << 16) | 1;
    out.extend_from_slice(&adler.to_be_bytes());
    out
}

/// A valid, fully decodable `side`×`side` 8-bit RGBA PNG of transparent black.
fn bomb(side: u32) -> Vec<u8> {
    let mut ihdr = side.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    let raw = u64::from(side) * (1 + 4 * u64::from(side));
    let mut out = png::SIGNATURE.to_vec();
    png::chunk(&mut out, b"IHDR", &ihdr);
    png::chunk(&mut out, b"IDAT", &zlib_zeros(raw));
    png::chunk(&mut out, b"IEND", &[]);
    out
}

fn thumbnail(client: &Client, mxc: &str, size: u32) -> (u16, tests::Value) {
    let rest = mxc.strip_prefix("mxc://").expect("an mxc URI");
    let (server, id) = rest.split_once('/').expect("server/id");
    client.get(&format!(
        "/_matrix/client/v1/media/thumbnail/{}/{}?width={size}&height={size}&method=scale",
        enc(server),
        enc(id)
    ))
}

#[test]
fn a_png_declaring_a_huge_image_is_refused_without_decoding() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bytes = bomb(SIDE);
    assert!(
        bytes.len() < 1024 * 1024,
        "the bomb is {} bytes",
        bytes.len()
    );
    let reply = alice.request(
        "POST",
        "/_matrix/media/v3/upload",
        &[("Content-Type", "image/png")],
        Some(&bytes),
    );
    assert_eq!(reply.status, 200, "upload: {:?}", reply.json());
    let mxc = reply.json()["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned();
    let peak_before = env.proc_status_kib("VmHWM").expect("VmHWM");

    // 15 sizes at once, as a client opening a room full of this image would ask.
    let answers: Vec<(u16, tests::Value)> = thread::scope(|scope| {
        let asks: Vec<_> = (0..15)
            .map(|i| {
                let (alice, mxc) = (&alice, &mxc);
                scope.spawn(move || thumbnail(alice, mxc, 32 + 16 * i))
            })
            .collect();
        asks.into_iter()
            .map(|ask| ask.join().expect("thumbnail thread"))
            .collect()
    });
    for (status, body) in &answers {
        assert_eq!(*status, 413, "{body:#}");
        assert_eq!(body["errcode"], "M_TOO_LARGE", "{body:#}");
        let reason = body["error"].as_str().unwrap_or_default();
        assert!(
            reason.contains("4990x4990") && reason.contains("MiB"),
            "the error says why: {reason}"
        );
    }
    let peak_after = env.proc_status_kib("VmHWM").expect("VmHWM");
    assert!(
        peak_after < peak_before + 32 * 1024,
        "peak RSS grew from {peak_before} to {peak_after} KiB"
    );
    // The server is unharmed.
    alice.get_ok("/_matrix/client/versions");
}
