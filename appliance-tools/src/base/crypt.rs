//! The passphrase-encrypted backup container: a streaming wrapper around the backup tar.
//!
//! `appliance backup --encrypt` writes the tar through an [`Encryptor`]; `appliance restore`
//! recognises the container by its magic ([`is_encrypted`]) and reads the tar back through a
//! [`Decryptor`]. Nothing here knows about tar or manifests: it turns a byte stream into a
//! sealed byte stream and back, in bounded memory (one chunk), so a backup of any size needs
//! about 64 MiB for the key derivation and 64 KiB for the data.
//!
//! # Format, version 1
//!
//! An 80-byte header, all integers big-endian:
//!
//! ```text
//! offset size  field
//!      0   16  magic "OUTPOST-ENC-BKP\n"
//!     16    1  container version, 1
//!     17    1  KDF: 1 = Argon2id (version 0x13), 32-byte output
//!     18    1  AEAD: 1 = ChaCha20-Poly1305 in the STREAM construction below
//!     19    1  reserved, 0
//!     20    4  Argon2 memory in KiB (65536 = 64 MiB when written by this tool)
//!     24    4  Argon2 passes (3)
//!     28    4  Argon2 lanes (1)
//!     32    4  chunk size: plaintext bytes per chunk (65536)
//!     36   16  salt, random per file
//!     52    7  nonce prefix, random per file
//!     59    5  reserved, 0
//!     64   16  key check: the Poly1305 tag of the empty message under nonce
//!              prefix || FFFFFFFF || 02, with bytes 0..64 as associated data
//! ```
//!
//! Then the plaintext (the tar) in chunks. Chunk `i` (from 0) is the ChaCha20-Poly1305
//! encryption of the next `chunk size` plaintext bytes, followed by its 16-byte tag, under the
//! key Argon2id(passphrase, salt) and the nonce `prefix || i as u32 || flag`, where `flag` is
//! 1 on the last chunk and 0 on every other; all 80 header bytes are its associated data. The
//! last chunk is always shorter than `chunk size` (it is empty when the plaintext is a multiple
//! of the chunk size), so a reader knows a chunk is the last by its length alone. This is the
//! STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár ("Online
//! Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", 2015): reordered chunks
//! fail (the counter is in the nonce), a file cut at a chunk boundary lacks a chunk with the
//! last flag, bytes appended after the end become part of the last chunk as read and fail its
//! tag, and an altered header fails every tag. The key check tells a wrong passphrase from a damaged file before any chunk is
//! read (an altered salt or parameter also fails it: to the reader it is the same thing).
//!
//! The passphrase only ever lives in memory; the header records everything else a reader
//! needs, so the KDF parameters can be raised later without a new container version.

use std::fmt;
use std::io::{self, Read, Write};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use rand::RngCore;

/// The first bytes of every encrypted backup; a plain backup starts with a tar header instead.
pub const MAGIC: [u8; 16] = *b"OUTPOST-ENC-BKP\n";
/// The container version this tool writes and reads.
const VERSION: u8 = 1;
/// KDF identifier: Argon2id, version 0x13.
const KDF_ARGON2ID: u8 = 1;
/// AEAD identifier: ChaCha20-Poly1305 STREAM (32-bit counter, last-chunk flag).
const AEAD_CHACHA20POLY1305_STREAM: u8 = 1;
/// Header length, key check included.
pub const HEADER_LEN: usize = 80;
/// The part of the header the key check authenticates.
const FIELDS_LEN: usize = 64;
/// Bytes of authentication tag after each chunk.
const TAG_LEN: usize = 16;
/// Length of the random nonce prefix.
const PREFIX_LEN: usize = 7;
/// Length of the random salt.
const SALT_LEN: usize = 16;
/// The counter value reserved for the key check; chunks stop one short of it.
const KEY_CHECK_COUNTER: u32 = u32::MAX;
/// The flag byte of the key check's nonce (chunks use 0 and 1).
const KEY_CHECK_FLAG: u8 = 2;

/// Plaintext bytes per chunk written by this tool: small enough for a small box's memory, large
/// enough that the 16-byte tags cost 0.02 %.
const CHUNK_SIZE: u32 = 64 * 1024;
/// Chunk sizes a reader accepts (a hostile header must not make it allocate gigabytes).
const CHUNK_SIZES: std::ops::RangeInclusive<u32> = 4096..=(16 * 1024 * 1024);

/// Argon2id parameters written into new backups: 64 MiB and three passes take a few hundred
/// milliseconds on the appliance's class of CPU, once per backup or restore, and make each
/// passphrase guess cost the same.
pub const KDF_PARAMS: KdfParams = KdfParams {
    memory_kib: 64 * 1024,
    passes: 3,
    lanes: 1,
};
/// Largest Argon2 memory a reader agrees to use (1 GiB), so a forged header cannot exhaust RAM.
const MAX_MEMORY_KIB: u32 = 1024 * 1024;
/// Largest pass and lane counts a reader agrees to run.
const MAX_PASSES: u32 = 64;
const MAX_LANES: u32 = 16;

/// Argon2id cost parameters, as recorded in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub passes: u32,
    /// Lanes (run one after another here: the crate is built without threads).
    pub lanes: u32,
}

/// Why an encrypted backup cannot be written or read.
#[derive(Debug)]
pub enum CryptError {
    /// The header is not one this tool can read (other version, unknown algorithm, absurd
    /// parameters, or not an encrypted backup at all).
    BadHeader(String),
    /// The key check fails: the passphrase is not the one the backup was made with (or the
    /// header's salt or parameters were altered, which looks the same).
    WrongPassphrase,
    /// A chunk fails authentication: the file was altered, damaged or cut inside a chunk.
    Damaged {
        /// Index of the first chunk that fails.
        chunk: u32,
    },
    /// The file ends before the chunk marked last.
    Truncated,
    /// The operating system's random source or the KDF failed.
    Crypto(String),
    /// Reading or writing the underlying file failed.
    Io(io::Error),
}

impl fmt::Display for CryptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadHeader(detail) => write!(f, "its encryption header is unusable ({detail})"),
            Self::WrongPassphrase => f.write_str("the passphrase does not open this backup"),
            Self::Damaged { chunk } => write!(
                f,
                "the encrypted data was altered or damaged (chunk {chunk} fails authentication)"
            ),
            Self::Truncated => {
                f.write_str("the encrypted file is truncated (its last chunk is missing)")
            }
            Self::Crypto(detail) => write!(f, "encryption failed: {detail}"),
            Self::Io(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for CryptError {}

impl From<CryptError> for io::Error {
    fn from(err: CryptError) -> Self {
        match err {
            CryptError::Io(err) => err,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// Whether a file starting with `prefix` (at least [`MAGIC`]'s length) is an encrypted backup.
pub fn is_encrypted(prefix: &[u8]) -> bool {
    prefix.starts_with(&MAGIC)
}

/// A parsed header: the parameters a reader needs, and its bytes (the associated data of every
/// chunk).
#[derive(Debug, Clone)]
pub struct Header {
    bytes: [u8; HEADER_LEN],
    kdf: KdfParams,
    chunk_size: u32,
}

impl Header {
    /// Reads and checks the header at the start of `reader`; nothing is derived yet.
    pub fn read(reader: &mut impl Read) -> Result<Self, CryptError> {
        let mut bytes = [0u8; HEADER_LEN];
        reader
            .read_exact(&mut bytes)
            .map_err(|err| match err.kind() {
                io::ErrorKind::UnexpectedEof => {
                    CryptError::BadHeader("the file is shorter than the header".to_owned())
                }
                _ => CryptError::Io(err),
            })?;
        Self::parse(bytes)
    }

    fn parse(bytes: [u8; HEADER_LEN]) -> Result<Self, CryptError> {
        let bad = |detail: &str| Err(CryptError::BadHeader(detail.to_owned()));
        if !is_encrypted(&bytes) {
            return bad("it is not an Outpost encrypted backup");
        }
        if bytes[16] != VERSION {
            return Err(CryptError::BadHeader(format!(
                "container version {}; this tool reads version {VERSION}",
                bytes[16]
            )));
        }
        if bytes[17] != KDF_ARGON2ID || bytes[18] != AEAD_CHACHA20POLY1305_STREAM {
            return bad("unknown key derivation or cipher");
        }
        if bytes[19] != 0 || bytes[59..64].iter().any(|&b| b != 0) {
            return bad("reserved bytes are set");
        }
        let kdf = KdfParams {
            memory_kib: be32(&bytes[20..24]),
            passes: be32(&bytes[24..28]),
            lanes: be32(&bytes[28..32]),
        };
        let chunk_size = be32(&bytes[32..36]);
        if !(1..=MAX_PASSES).contains(&kdf.passes)
            || !(1..=MAX_LANES).contains(&kdf.lanes)
            || !(8 * kdf.lanes..=MAX_MEMORY_KIB).contains(&kdf.memory_kib)
        {
            return bad("key derivation parameters out of range");
        }
        if !CHUNK_SIZES.contains(&chunk_size) {
            return bad("chunk size out of range");
        }
        Ok(Self {
            bytes,
            kdf,
            chunk_size,
        })
    }

    /// A fresh header for a new backup: random salt and nonce prefix, this tool's parameters.
    fn generate(kdf: KdfParams) -> Result<Self, CryptError> {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[..16].copy_from_slice(&MAGIC);
        bytes[16] = VERSION;
        bytes[17] = KDF_ARGON2ID;
        bytes[18] = AEAD_CHACHA20POLY1305_STREAM;
        bytes[20..24].copy_from_slice(&kdf.memory_kib.to_be_bytes());
        bytes[24..28].copy_from_slice(&kdf.passes.to_be_bytes());
        bytes[28..32].copy_from_slice(&kdf.lanes.to_be_bytes());
        bytes[32..36].copy_from_slice(&CHUNK_SIZE.to_be_bytes());
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes[36..36 + SALT_LEN + PREFIX_LEN])
            .map_err(|err| CryptError::Crypto(format!("no randomness from the system: {err}")))?;
        Ok(Self {
            bytes,
            kdf,
            chunk_size: CHUNK_SIZE,
        })
    }

    /// The Argon2id parameters recorded in the header.
    pub fn kdf(&self) -> KdfParams {
        self.kdf
    }

    fn salt(&self) -> &[u8] {
        &self.bytes[36..36 + SALT_LEN]
    }

    fn nonce(&self, counter: u32, flag: u8) -> Nonce {
        let mut nonce = [0u8; 12];
        nonce[..PREFIX_LEN].copy_from_slice(&self.bytes[52..52 + PREFIX_LEN]);
        nonce[PREFIX_LEN..11].copy_from_slice(&counter.to_be_bytes());
        nonce[11] = flag;
        Nonce::from(nonce)
    }

    /// Derives the key from `passphrase` (the slow step: Argon2id with the header's costs).
    fn derive(&self, passphrase: &str) -> Result<ChaCha20Poly1305, CryptError> {
        let params = Params::new(
            self.kdf.memory_kib,
            self.kdf.passes,
            self.kdf.lanes,
            Some(32),
        )
        .map_err(|err| CryptError::BadHeader(format!("key derivation parameters: {err}")))?;
        let mut key = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase.as_bytes(), self.salt(), &mut key)
            .map_err(|err| CryptError::Crypto(format!("key derivation: {err}")))?;
        let cipher = ChaCha20Poly1305::new(&Key::from(key));
        key.fill(0);
        Ok(cipher)
    }

    /// The key check tag for `cipher`.
    fn key_check(&self, cipher: &ChaCha20Poly1305) -> Result<Tag, CryptError> {
        cipher
            .encrypt_inout_detached(
                &self.nonce(KEY_CHECK_COUNTER, KEY_CHECK_FLAG),
                &self.bytes[..FIELDS_LEN],
                (&mut [][..]).into(),
            )
            .map_err(|_| CryptError::Crypto("sealing the key check".to_owned()))
    }

    /// Derives the key and checks it against the header's key check.
    pub fn open(&self, passphrase: &str) -> Result<Opened, CryptError> {
        let cipher = self.derive(passphrase)?;
        // Compared through the AEAD's own constant-time check rather than `==` on the bytes.
        let stored = Tag::try_from(&self.bytes[FIELDS_LEN..]).expect("the key check is 16 bytes");
        cipher
            .decrypt_inout_detached(
                &self.nonce(KEY_CHECK_COUNTER, KEY_CHECK_FLAG),
                &self.bytes[..FIELDS_LEN],
                (&mut [][..]).into(),
                &stored,
            )
            .map_err(|_| CryptError::WrongPassphrase)?;
        Ok(Opened {
            header: self.clone(),
            cipher,
        })
    }
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes.try_into().expect("a 4-byte field"))
}

/// A header whose key the passphrase derived and the key check confirmed.
pub struct Opened {
    header: Header,
    cipher: ChaCha20Poly1305,
}

/// Seals a byte stream into the container; [`Encryptor::finish`] writes the last chunk.
/// Dropped without `finish`, the output lacks its last chunk and every reader refuses it.
pub struct Encryptor<W: Write> {
    inner: W,
    header: Header,
    cipher: ChaCha20Poly1305,
    counter: u32,
    buffer: Vec<u8>,
}

impl<W: Write> Encryptor<W> {
    /// Derives a key from `passphrase` with `kdf` and a fresh salt, and writes the header.
    pub fn new(mut inner: W, passphrase: &str, kdf: KdfParams) -> Result<Self, CryptError> {
        let mut header = Header::generate(kdf)?;
        let cipher = header.derive(passphrase)?;
        let check = header.key_check(&cipher)?;
        header.bytes[FIELDS_LEN..].copy_from_slice(&check);
        inner.write_all(&header.bytes).map_err(CryptError::Io)?;
        Ok(Self {
            inner,
            buffer: Vec::with_capacity(header.chunk_size as usize + TAG_LEN),
            header,
            cipher,
            counter: 0,
        })
    }

    /// Seals the buffered plaintext as chunk `counter` and writes it.
    fn seal(&mut self, last: bool) -> io::Result<()> {
        if self.counter == KEY_CHECK_COUNTER {
            return Err(io::Error::other(
                "the backup is too large for the encrypted format (256 TiB)",
            ));
        }
        let nonce = self.header.nonce(self.counter, u8::from(last));
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &nonce,
                &self.header.bytes,
                self.buffer.as_mut_slice().into(),
            )
            .map_err(|_| io::Error::other("sealing a chunk failed"))?;
        self.inner.write_all(&self.buffer)?;
        self.inner.write_all(&tag)?;
        self.buffer.clear();
        self.counter += 1;
        Ok(())
    }

    /// Writes the last chunk (shorter than a full one, possibly empty) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal(true)?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Encryptor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.header.chunk_size as usize - self.buffer.len();
        let taken = room.min(buf.len());
        self.buffer.extend_from_slice(&buf[..taken]);
        // A full chunk is never the last one: the last is always short.
        if self.buffer.len() == self.header.chunk_size as usize {
            self.seal(false)?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Opens the container's chunks one at a time, handing out plaintext only after its chunk has
/// authenticated. It reports a clean end of stream only after the chunk marked last has
/// authenticated and nothing follows it; every other ending is an error.
pub struct Decryptor<R: Read> {
    inner: R,
    opened: Opened,
    counter: u32,
    /// The current chunk: ciphertext while reading, plaintext once opened.
    buffer: Vec<u8>,
    /// How much of the opened chunk has been handed out.
    position: usize,
    /// The chunk marked last has been opened.
    finished: bool,
    /// The first failure, repeated on every later read.
    failed: Option<String>,
}

impl<R: Read> Decryptor<R> {
    /// Reads the chunks after the header (`inner` is positioned just after it).
    pub fn new(inner: R, opened: Opened) -> Self {
        let capacity = opened.header.chunk_size as usize + TAG_LEN;
        Self {
            inner,
            opened,
            counter: 0,
            buffer: Vec::with_capacity(capacity),
            position: 0,
            finished: false,
            failed: None,
        }
    }

    /// The first failure seen, in words, if any: restore reports it instead of what the tar
    /// reader made of the error.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Reads up to a full chunk and its tag, or less at the end of the file.
    fn fill(&mut self) -> io::Result<()> {
        let full = self.opened.header.chunk_size as usize + TAG_LEN;
        self.buffer.resize(full, 0);
        let mut read = 0;
        while read < full {
            match self.inner.read(&mut self.buffer[read..]) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        self.buffer.truncate(read);
        Ok(())
    }

    /// Reads and opens the next chunk.
    fn next_chunk(&mut self) -> Result<(), CryptError> {
        self.fill().map_err(CryptError::Io)?;
        let full = self.opened.header.chunk_size as usize + TAG_LEN;
        let last = self.buffer.len() < full;
        if self.buffer.len() < TAG_LEN {
            return Err(if self.buffer.is_empty() {
                CryptError::Truncated
            } else {
                CryptError::Damaged {
                    chunk: self.counter,
                }
            });
        }
        if self.counter == KEY_CHECK_COUNTER {
            return Err(CryptError::Damaged {
                chunk: self.counter,
            });
        }
        let split = self.buffer.len() - TAG_LEN;
        let tag = Tag::try_from(&self.buffer[split..]).expect("a 16-byte tag");
        let nonce = self.opened.header.nonce(self.counter, u8::from(last));
        self.opened
            .cipher
            .decrypt_inout_detached(
                &nonce,
                &self.opened.header.bytes,
                self.buffer[..split].as_mut().into(),
                &tag,
            )
            .map_err(|_| CryptError::Damaged {
                chunk: self.counter,
            })?;
        self.buffer.truncate(split);
        self.position = 0;
        self.counter += 1;
        // `fill` stopped short only at the end of the file, so nothing follows this chunk.
        self.finished = last;
        Ok(())
    }
}

impl<R: Read> Read for Decryptor<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Some(failure) = &self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, failure.clone()));
        }
        while self.position == self.buffer.len() {
            if self.finished || out.is_empty() {
                return Ok(0);
            }
            if let Err(err) = self.next_chunk() {
                self.buffer.clear();
                self.position = 0;
                if let CryptError::Io(err) = err {
                    return Err(err);
                }
                let text = err.to_string();
                self.failed = Some(text.clone());
                return Err(io::Error::new(io::ErrorKind::InvalidData, text));
            }
        }
        let n = out.len().min(self.buffer.len() - self.position);
        out[..n].copy_from_slice(&self.buffer[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters so unit tests stay fast; the format is the same.
    const TEST_KDF: KdfParams = KdfParams {
        memory_kib: 64,
        passes: 1,
        lanes: 1,
    };

    fn seal(plain: &[u8], passphrase: &str) -> Vec<u8> {
        let mut sealer = Encryptor::new(Vec::new(), passphrase, TEST_KDF).expect("encryptor");
        for piece in plain.chunks(1000) {
            sealer.write_all(piece).expect("write");
        }
        sealer.finish().expect("finish")
    }

    fn open(sealed: &[u8], passphrase: &str) -> Result<Vec<u8>, String> {
        let mut reader = sealed;
        let header = Header::read(&mut reader).map_err(|err| err.to_string())?;
        let opened = header.open(passphrase).map_err(|err| err.to_string())?;
        let mut plain = Vec::new();
        Decryptor::new(reader, opened)
            .read_to_end(&mut plain)
            .map_err(|err| err.to_string())?;
        Ok(plain)
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn round_trips_at_and_around_chunk_boundaries() {
        let chunk = CHUNK_SIZE as usize;
        for len in [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk] {
            let plain = sample(len);
            let sealed = seal(&plain, "correct horse");
            assert!(is_encrypted(&sealed));
            // Header, full chunks, and one short last chunk.
            let chunks = len / chunk + 1;
            assert_eq!(sealed.len(), HEADER_LEN + len + chunks * TAG_LEN, "{len}");
            assert_eq!(open(&sealed, "correct horse").as_deref(), Ok(&plain[..]));
        }
    }

    #[test]
    fn refuses_wrong_passphrase_and_every_kind_of_tampering() {
        let chunk = CHUNK_SIZE as usize;
        let sealed = seal(&sample(2 * chunk + 10), "correct horse");
        let wrong = open(&sealed, "correct horsf").expect_err("wrong passphrase");
        assert_eq!(wrong, "the passphrase does not open this backup");

        let mut flipped = sealed.clone();
        flipped[HEADER_LEN + chunk + 100] ^= 1;
        let err = open(&flipped, "correct horse").expect_err("flipped");
        assert!(err.contains("chunk 1 fails"), "{err}");

        let whole = chunk + TAG_LEN;
        let at_boundary = &sealed[..HEADER_LEN + 2 * whole];
        let err = open(at_boundary, "correct horse").expect_err("cut at a boundary");
        assert!(err.contains("truncated"), "{err}");
        let inside = &sealed[..sealed.len() - 3];
        assert!(open(inside, "correct horse").is_err(), "cut inside");

        let mut appended = sealed.clone();
        appended.push(0);
        let err = open(&appended, "correct horse").expect_err("appended");
        assert!(err.contains("chunk 2 fails"), "{err}");

        let mut swapped = sealed.clone();
        let (first, second) = (HEADER_LEN, HEADER_LEN + whole);
        let copy = sealed[first..first + whole].to_vec();
        swapped.copy_within(second..second + whole, first);
        swapped[second..second + whole].copy_from_slice(&copy);
        let err = open(&swapped, "correct horse").expect_err("reordered");
        assert!(err.contains("chunk 0 fails"), "{err}");

        // A header parameter changed: the key check no longer matches.
        let mut header = sealed.clone();
        header[27] ^= 1;
        assert!(open(&header, "correct horse").is_err(), "altered header");
    }

    #[test]
    fn refuses_hostile_headers_before_deriving() {
        let mut sealed = seal(b"x", "correct horse");
        sealed[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
        let err = open(&sealed, "correct horse").expect_err("huge memory");
        assert!(err.contains("out of range"), "{err}");
        let err = open(b"OUTPOST-ENC-BKP\n\x01", "x").expect_err("short");
        assert!(err.contains("shorter than the header"), "{err}");
    }
}
