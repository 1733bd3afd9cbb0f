//! The wire format: `[u32 BE length][u8 version][rmp-serde payload]`.
//!
//! `length` counts the version byte and the payload, so a frame occupies
//! `4 + length` bytes. The length is checked against the limit *before* the
//! body is buffered, so a hostile length prefix costs nothing. Payloads are
//! MessagePack with named fields (`to_vec_named`): a few bytes more per
//! message, in exchange for tolerating added optional fields across versions.

use super::error::{FrameError, RemoteError};
use crate::types::NodeId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::Cursor;

/// The only protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Bytes before the payload: length prefix plus version byte.
pub const HEADER_LEN: usize = 5;

/// What travels in one frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Envelope<M> {
    /// First frame of every stream: the sender's node id, which the receiver
    /// checks against the peer it authenticated by certificate.
    Hello {
        node: NodeId,
        /// What the sender serves above the transport (see
        /// `TransportConfig::app`).
        #[serde(default)]
        app: String,
    },
    /// Expects exactly one `Response` with the same id on the same connection.
    /// `deadline_ms` is the caller's remaining budget (relative: node clocks
    /// are not synchronised).
    Request {
        id: u64,
        deadline_ms: u64,
        body: M,
    },
    Response {
        id: u64,
        result: Result<M, RemoteError>,
    },
    OneWay {
        body: M,
    },
}

/// Encodes one frame, refusing payloads over `max_frame_len`.
pub fn encode<M: Serialize>(
    env: &Envelope<M>,
    max_frame_len: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(&[0, 0, 0, 0, PROTOCOL_VERSION]);
    rmp_serde::encode::write_named(&mut buf, env).map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = buf.len() - 4;
    if len > max_frame_len || len > u32::MAX as usize {
        return Err(FrameError::Oversized {
            len,
            max: max_frame_len,
        });
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// Incremental decoder for one stream: feed bytes as they arrive, take
/// frames out as they complete.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the first unconsumed byte in `buf`.
    start: usize,
    max_frame_len: usize,
}

impl FrameDecoder {
    pub fn new(max_frame_len: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max_frame_len,
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or the
    /// reason the stream is unusable (after which the decoder must be dropped).
    pub fn next_frame<M: DeserializeOwned>(&mut self) -> Result<Option<Envelope<M>>, FrameError> {
        let avail = &self.buf[self.start..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max_frame_len {
            return Err(FrameError::Oversized {
                len,
                max: self.max_frame_len,
            });
        }
        if avail.len() < HEADER_LEN {
            return Ok(None);
        }
        if avail[4] != PROTOCOL_VERSION {
            return Err(FrameError::BadVersion(avail[4]));
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let env = decode_payload(&avail[HEADER_LEN..4 + len])?;
        self.start += 4 + len;
        Ok(Some(env))
    }

    /// Call at end of stream: leftover bytes mean the peer cut a frame short.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.buffered() {
            0 => Ok(()),
            n => Err(FrameError::Truncated(n)),
        }
    }
}

fn decode_payload<M: DeserializeOwned>(payload: &[u8]) -> Result<Envelope<M>, FrameError> {
    let mut cursor = Cursor::new(payload);
    let env = {
        let mut de = rmp_serde::Deserializer::new(&mut cursor);
        Envelope::<M>::deserialize(&mut de).map_err(|e| FrameError::Decode(e.to_string()))?
    };
    let used = cursor.position() as usize;
    if used != payload.len() {
        return Err(FrameError::TrailingBytes(payload.len() - used));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Ping(u64),
        Text { s: String, tags: Vec<u32> },
    }

    const MAX: usize = 1 << 20;

    fn samples() -> Vec<Envelope<Msg>> {
        vec![
            Envelope::Hello {
                node: NodeId(3),
                app: "Counter(add:w)".into(),
            },
            Envelope::Request {
                id: 7,
                deadline_ms: 1500,
                body: Msg::Ping(42),
            },
            Envelope::Response {
                id: 7,
                result: Ok(Msg::Text {
                    s: "hé".into(),
                    tags: vec![1, 2],
                }),
            },
            Envelope::Response {
                id: 8,
                result: Err(RemoteError::Dropped),
            },
            Envelope::OneWay {
                body: Msg::Ping(u64::MAX),
            },
        ]
    }

    #[test]
    fn round_trip_all_variants_in_one_stream() {
        let mut bytes = Vec::new();
        for env in samples() {
            bytes.extend(encode(&env, MAX).unwrap());
        }
        let mut dec = FrameDecoder::new(MAX);
        dec.extend(&bytes);
        let mut out = Vec::new();
        while let Some(env) = dec.next_frame::<Msg>().unwrap() {
            out.push(env);
        }
        assert_eq!(out, samples());
        dec.finish().unwrap();
    }

    #[test]
    fn byte_at_a_time_delivery_decodes_the_same() {
        let bytes: Vec<u8> = samples()
            .iter()
            .flat_map(|e| encode(e, MAX).unwrap())
            .collect();
        let mut dec = FrameDecoder::new(MAX);
        let mut out = Vec::new();
        for b in &bytes {
            dec.extend(std::slice::from_ref(b));
            while let Some(env) = dec.next_frame::<Msg>().unwrap() {
                out.push(env);
            }
        }
        assert_eq!(out, samples());
    }

    #[test]
    fn truncated_frame_waits_then_fails_at_end_of_stream() {
        let bytes = encode(&samples()[1], MAX).unwrap();
        let mut dec = FrameDecoder::new(MAX);
        dec.extend(&bytes[..bytes.len() - 1]);
        assert_eq!(dec.next_frame::<Msg>().unwrap(), None);
        assert_eq!(dec.finish(), Err(FrameError::Truncated(bytes.len() - 1)));
    }

    #[test]
    fn bad_version_is_rejected_from_the_header_alone() {
        let mut dec = FrameDecoder::new(MAX);
        dec.extend(&[0, 0, 0, 100, 9]);
        assert_eq!(dec.next_frame::<Msg>(), Err(FrameError::BadVersion(9)));
    }

    #[test]
    fn oversized_length_is_rejected_before_buffering() {
        let mut dec = FrameDecoder::new(MAX);
        dec.extend(&u32::MAX.to_be_bytes());
        assert_eq!(
            dec.next_frame::<Msg>(),
            Err(FrameError::Oversized {
                len: u32::MAX as usize,
                max: MAX
            })
        );
        let big = Envelope::OneWay {
            body: Msg::Text {
                s: "x".repeat(2000),
                tags: vec![],
            },
        };
        assert!(matches!(
            encode(&big, 1024),
            Err(FrameError::Oversized { .. })
        ));
    }

    #[test]
    fn garbage_and_trailing_bytes_are_errors_not_panics() {
        let mut dec = FrameDecoder::new(MAX);
        dec.extend(&[0, 0, 0, 4, PROTOCOL_VERSION, 0xc1, 0xff, 0x00]);
        assert!(matches!(
            dec.next_frame::<Msg>(),
            Err(FrameError::Decode(_))
        ));

        let mut frame = encode(&samples()[0], MAX).unwrap();
        frame.push(0);
        let len = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        let mut dec = FrameDecoder::new(MAX);
        dec.extend(&frame);
        assert_eq!(dec.next_frame::<Msg>(), Err(FrameError::TrailingBytes(1)));

        let mut dec = FrameDecoder::new(MAX);
        dec.extend(&[0, 0, 0, 0]);
        assert_eq!(dec.next_frame::<Msg>(), Err(FrameError::Empty));
    }

    #[test]
    fn pseudo_random_garbage_never_panics() {
        // A fixed xorshift stream: many shapes of junk, reproducible.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..2000 {
            let mut junk = vec![0u8; 5 + round % 64];
            for b in junk.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            // A plausible header so the payload decoder is exercised too.
            let len = (junk.len() - 4) as u32;
            if round % 2 == 0 {
                junk[..4].copy_from_slice(&len.to_be_bytes());
                junk[4] = PROTOCOL_VERSION;
            }
            let mut dec = FrameDecoder::new(MAX);
            dec.extend(&junk);
            for _ in 0..8 {
                match dec.next_frame::<Msg>() {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
