//! SHA-256 as the store uses it: a validated hex digest type, and a hasher that runs on its own
//! thread behind a bounded channel so hashing overlaps with network and disk I/O (PERF-NOTES §5.5:
//! 1.1 GB/s this way against 0.9 GB/s inline on the runtime). Memory is bounded by the channel.

use std::{fmt, str::FromStr};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

/// A SHA-256 digest, shown and parsed as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest([u8; 32]);

/// A string that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a SHA-256 digest (64 hexadecimal digits)")]
pub struct BadDigest(pub String);

impl Sha256Digest {
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// The digest of everything fed to `hasher`.
    pub fn finish(hasher: Sha256) -> Self {
        Self(hasher.finalize().into())
    }

    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl FromStr for Sha256Digest {
    type Err = BadDigest;

    /// Accepts upper- or lower-case hex (hand-edited manifests), shows lower case.
    fn from_str(s: &str) -> Result<Self, BadDigest> {
        let bad = || BadDigest(s.to_owned());
        if s.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Chunks queued for the hashing thread before `update` waits: bounds memory per stream.
const QUEUE: usize = 16;

/// Hashes a stream of chunks on a dedicated thread. `update` only waits when the thread is
/// `QUEUE` chunks behind.
pub struct StreamHasher {
    tx: Option<mpsc::Sender<Bytes>>,
    done: oneshot::Receiver<(Sha256Digest, u64)>,
}

impl Default for StreamHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamHasher {
    pub fn new() -> Self {
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                let mut n = 0u64;
                while let Some(chunk) = rx.blocking_recv() {
                    n += chunk.len() as u64;
                    h.update(&chunk);
                }
                let _ = done_tx.send((Sha256Digest(h.finalize().into()), n));
            })
            .expect("spawn the sha256 thread");
        Self { tx: Some(tx), done }
    }

    /// Queues a chunk (cheap: `Bytes` is reference counted, nothing is copied).
    pub async fn update(&mut self, chunk: Bytes) {
        if let Some(tx) = &self.tx {
            // The thread only stops when the sender is dropped, so send cannot fail.
            let _ = tx.send(chunk).await;
        }
    }

    /// The digest and byte count of everything queued.
    pub async fn finish(mut self) -> (Sha256Digest, u64) {
        drop(self.tx.take());
        // The thread always answers once its queue is closed.
        (&mut self.done).await.expect("sha256 thread answered")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_case() {
        let d = Sha256Digest::of(b"abc");
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(d.to_string(), hex);
        assert_eq!(hex.parse::<Sha256Digest>(), Ok(d));
        assert_eq!(hex.to_uppercase().parse::<Sha256Digest>(), Ok(d));
        assert!("abc".parse::<Sha256Digest>().is_err());
        assert!("zz".repeat(32).parse::<Sha256Digest>().is_err());
    }

    #[tokio::test]
    async fn threaded_hash_equals_one_shot() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = StreamHasher::new();
        for chunk in data.chunks(7919) {
            h.update(Bytes::copy_from_slice(chunk)).await;
        }
        assert_eq!(h.finish().await, (Sha256Digest::of(&data), data.len() as u64));
    }
}
