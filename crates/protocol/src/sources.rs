//! Sources: one request answered by many streams, each with a header and its own frames,
//! carried inside one gotalk streaming request on the request's id.
//!
//! The client opens with a streaming request (`s`) whose payload is an [`Open`] prefix and the
//! service's request body. The server answers with result parts (`S`), each one [`Part`]:
//! a source announced with its header, a frame, a compressed frame, a source completed, a
//! source aborted with a reason. The final empty `S` says every source is finished; an
//! ErrorResult says the request failed (before the first source, or after every announced
//! source was ended). Every announced source ends exactly once, completed or aborted.
//!
//! The client's further request parts (`p`) are [`Control`] parts: credit for more frames of
//! one source, credit for more source announcements, and cancels. Ending the request stream
//! cancels whatever is still open.
//!
//! Every number is fixed-width lowercase hex, as in the rest of gotalk, so a part's layout is
//! a one-byte tag, an eight-digit source id, then the rest. Decoding is strict: a part that
//! is too short, has a bad number, an unknown tag, a zero credit or a reason that is not UTF-8
//! is an error, never a guess. See [`crate::docs::sources`] for the whole mapping.

use crate::hex::{parse_hex, write_hex};

/// Bytes in front of the request body: tag, flags (2 digits), frame window and source window
/// (8 digits each).
pub const OPEN_LEN: usize = 1 + 2 + 8 + 8;
/// The default frames a source may send before the client grants more.
pub const DEFAULT_FRAME_WINDOW: u32 = 1024;
/// The default sources the server may announce before the client grants more.
pub const DEFAULT_SOURCE_WINDOW: u32 = 128;
/// The default largest frame, uncompressed: 1 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 1024 * 1024;
/// The most bytes a part adds around a frame: tag, source id and uncompressed length.
pub const PART_OVERHEAD: usize = 1 + 8 + 8;
/// Open flag: the client can decompress [`Part::Compressed`] frames.
pub const FLAG_LZ4: u8 = 1;

/// Why a sources part or control part is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourcesError {
    /// The part is shorter than its tag requires, or longer where no payload is allowed.
    #[error("malformed {0} part: wrong length")]
    Length(&'static str),
    /// The first byte is not a tag this side knows.
    #[error("unknown sources tag 0x{0:02x}")]
    Tag(u8),
    /// A fixed-width number holds something other than hex digits.
    #[error("invalid hex digits in the {0} field")]
    Number(&'static str),
    /// A credit grant of zero, which would mean nothing.
    #[error("credit grant of zero")]
    ZeroCredit,
    /// An abort reason that is not UTF-8.
    #[error("abort reason is not UTF-8")]
    Reason,
    /// Open flags this side does not know.
    #[error("unknown open flags 0x{0:02x}")]
    Flags(u8),
    /// A compressed frame claims more uncompressed bytes than the frame limit allows; it is
    /// refused before anything is allocated for it.
    #[error("compressed frame of {len} bytes exceeds the frame limit of {max}")]
    FrameTooLarge {
        /// The uncompressed length the part declares.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// A compressed frame that does not decompress to exactly its declared length.
    #[error("compressed frame is corrupt")]
    Corrupt,
}

fn number(bytes: &[u8], field: &'static str) -> Result<u32, SourcesError> {
    parse_hex(bytes).ok_or(SourcesError::Number(field))
}

fn push_hex(out: &mut Vec<u8>, value: u32) {
    let mut digits = [0u8; 8];
    write_hex(&mut digits, value);
    out.extend_from_slice(&digits);
}

/// The prefix of the request payload: what the client can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    /// The client can decompress LZ4 frames.
    pub lz4: bool,
    /// Frames each source may send before its first grant (never zero).
    pub frame_window: u32,
    /// Sources the server may announce before the first source grant (never zero).
    pub source_window: u32,
}

impl Default for Open {
    fn default() -> Self {
        Open {
            lz4: false,
            frame_window: DEFAULT_FRAME_WINDOW,
            source_window: DEFAULT_SOURCE_WINDOW,
        }
    }
}

impl Open {
    /// The request payload: this prefix, then `body`.
    pub fn encode(&self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(OPEN_LEN + body.len());
        out.push(b'o');
        let mut flags = [0u8; 2];
        write_hex(&mut flags, u32::from(if self.lz4 { FLAG_LZ4 } else { 0 }));
        out.extend_from_slice(&flags);
        push_hex(&mut out, self.frame_window);
        push_hex(&mut out, self.source_window);
        out.extend_from_slice(body);
        out
    }

    /// Splits a request payload into its prefix and the body.
    ///
    /// # Errors
    /// A payload shorter than [`OPEN_LEN`], another tag, bad digits, unknown flags or a zero
    /// window.
    pub fn decode(payload: &[u8]) -> Result<(Open, &[u8]), SourcesError> {
        if payload.len() < OPEN_LEN {
            return Err(SourcesError::Length("open"));
        }
        if payload[0] != b'o' {
            return Err(SourcesError::Tag(payload[0]));
        }
        let flags = number(&payload[1..3], "flags")? as u8;
        if flags & !FLAG_LZ4 != 0 {
            return Err(SourcesError::Flags(flags));
        }
        let nonzero = |n: u32| if n == 0 { Err(SourcesError::ZeroCredit) } else { Ok(n) };
        let open = Open {
            lz4: flags & FLAG_LZ4 != 0,
            frame_window: nonzero(number(&payload[3..11], "frame window")?)?,
            source_window: nonzero(number(&payload[11..19], "source window")?)?,
        };
        Ok((open, &payload[OPEN_LEN..]))
    }
}

/// One result part of a sources response, borrowing from the payload it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    /// `a`: a new source and its header.
    Announce {
        /// The source's id, unique within the request.
        source: u32,
        /// The header, opaque to gotalk.
        header: &'a [u8],
    },
    /// `f`: one frame, as is.
    Frame {
        /// The source it belongs to.
        source: u32,
        /// The frame.
        data: &'a [u8],
    },
    /// `z`: one frame, LZ4-compressed (a raw LZ4 block), with its uncompressed length.
    Compressed {
        /// The source it belongs to.
        source: u32,
        /// The frame's length once decompressed.
        len: u32,
        /// The LZ4 block.
        data: &'a [u8],
    },
    /// `c`: the source finished successfully; nothing more comes from it.
    Complete {
        /// The source.
        source: u32,
    },
    /// `x`: the source failed or was cancelled; nothing more comes from it.
    Abort {
        /// The source.
        source: u32,
        /// Why, for people.
        reason: &'a str,
    },
}

impl Part<'_> {
    /// The source this part is about.
    pub fn source(&self) -> u32 {
        match *self {
            Part::Announce { source, .. }
            | Part::Frame { source, .. }
            | Part::Compressed { source, .. }
            | Part::Complete { source }
            | Part::Abort { source, .. } => source,
        }
    }

    /// The part as a result payload.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, rest): (u8, &[u8]) = match self {
            Part::Announce { header, .. } => (b'a', header),
            Part::Frame { data, .. } => (b'f', data),
            Part::Compressed { data, .. } => (b'z', data),
            Part::Complete { .. } => (b'c', &[]),
            Part::Abort { reason, .. } => (b'x', reason.as_bytes()),
        };
        let mut out = Vec::with_capacity(PART_OVERHEAD + rest.len());
        out.push(tag);
        push_hex(&mut out, self.source());
        if let Part::Compressed { len, .. } = self {
            push_hex(&mut out, *len);
        }
        out.extend_from_slice(rest);
        out
    }

    /// Reads a result payload.
    ///
    /// # Errors
    /// An unknown tag, a part too short for its tag, bad digits, content after `c`, or an
    /// abort reason that is not UTF-8.
    pub fn decode(payload: &[u8]) -> Result<Part<'_>, SourcesError> {
        let Some(&tag) = payload.first() else { return Err(SourcesError::Length("result")) };
        let name = match tag {
            b'a' => "announce",
            b'f' => "frame",
            b'z' => "compressed frame",
            b'c' => "complete",
            b'x' => "abort",
            other => return Err(SourcesError::Tag(other)),
        };
        if payload.len() < 9 {
            return Err(SourcesError::Length(name));
        }
        let source = number(&payload[1..9], "source")?;
        let rest = &payload[9..];
        Ok(match tag {
            b'a' => Part::Announce { source, header: rest },
            b'f' => Part::Frame { source, data: rest },
            b'z' => {
                if rest.len() < 8 {
                    return Err(SourcesError::Length(name));
                }
                let len = number(&rest[..8], "length")?;
                Part::Compressed { source, len, data: &rest[8..] }
            }
            b'c' if rest.is_empty() => Part::Complete { source },
            b'c' => return Err(SourcesError::Length(name)),
            _ => Part::Abort {
                source,
                reason: std::str::from_utf8(rest).map_err(|_| SourcesError::Reason)?,
            },
        })
    }
}

/// A client's control part, sent as a request part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// `f`: the source may send `frames` more frames.
    Credit {
        /// The source.
        source: u32,
        /// How many more (never zero).
        frames: u32,
    },
    /// `s`: the server may announce `count` more sources.
    Sources {
        /// How many more (never zero).
        count: u32,
    },
    /// `x`: stop this source; it ends aborted.
    Cancel {
        /// The source.
        source: u32,
    },
    /// `X`: stop every source and the request.
    CancelAll,
}

impl Control {
    /// The control part as a request payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17);
        match *self {
            Control::Credit { source, frames } => {
                out.push(b'f');
                push_hex(&mut out, source);
                push_hex(&mut out, frames);
            }
            Control::Sources { count } => {
                out.push(b's');
                push_hex(&mut out, count);
            }
            Control::Cancel { source } => {
                out.push(b'x');
                push_hex(&mut out, source);
            }
            Control::CancelAll => out.push(b'X'),
        }
        out
    }

    /// Reads a request part.
    ///
    /// # Errors
    /// An unknown tag, a part of the wrong length for its tag, bad digits or a zero credit.
    pub fn decode(payload: &[u8]) -> Result<Control, SourcesError> {
        let Some(&tag) = payload.first() else { return Err(SourcesError::Length("control")) };
        let (name, len) = match tag {
            b'f' => ("credit", 17),
            b's' => ("source credit", 9),
            b'x' => ("cancel", 9),
            b'X' => ("cancel all", 1),
            other => return Err(SourcesError::Tag(other)),
        };
        if payload.len() != len {
            return Err(SourcesError::Length(name));
        }
        let nonzero = |n: u32| if n == 0 { Err(SourcesError::ZeroCredit) } else { Ok(n) };
        Ok(match tag {
            b'f' => Control::Credit {
                source: number(&payload[1..9], "source")?,
                frames: nonzero(number(&payload[9..17], "credit")?)?,
            },
            b's' => Control::Sources { count: nonzero(number(&payload[1..9], "credit")?)? },
            b'x' => Control::Cancel { source: number(&payload[1..9], "source")? },
            _ => Control::CancelAll,
        })
    }
}

/// Frames shorter than this are sent as is: LZ4 rarely saves enough on them to pay for the
/// eight-digit length it adds.
#[cfg(feature = "lz4")]
pub const COMPRESS_FROM: usize = 64;

/// The part for one frame: compressed when the client takes LZ4, `compress` is on and the
/// compressed part comes out smaller; as is otherwise.
#[cfg(feature = "lz4")]
pub fn encode_frame(source: u32, data: &[u8], compress: bool) -> Vec<u8> {
    if compress && data.len() >= COMPRESS_FROM {
        let block = lz4_flex::block::compress(data);
        // The length field costs 8 bytes, so it must save more than that to help.
        if block.len() + 8 < data.len() {
            if let Ok(len) = u32::try_from(data.len()) {
                return Part::Compressed { source, len, data: &block }.encode();
            }
        }
    }
    Part::Frame { source, data }.encode()
}

/// Decompresses a [`Part::Compressed`] frame of declared length `len`.
///
/// The length is checked against `max_frame`, and against what the block could possibly
/// expand to (LZ4 cannot exceed about 255× its input), before any memory is allocated, so a
/// small part cannot make the reader allocate much.
///
/// # Errors
/// [`SourcesError::FrameTooLarge`] past `max_frame`, [`SourcesError::Corrupt`] for a block that
/// is not LZ4 or does not come out at exactly `len` bytes.
#[cfg(feature = "lz4")]
pub fn decompress_frame(len: u32, data: &[u8], max_frame: u32) -> Result<Vec<u8>, SourcesError> {
    if len > max_frame {
        return Err(SourcesError::FrameTooLarge { len, max: max_frame });
    }
    if len as usize > data.len().saturating_mul(255) {
        return Err(SourcesError::Corrupt);
    }
    let mut out = vec![0u8; len as usize];
    match lz4_flex::block::decompress_into(data, &mut out) {
        Ok(written) if written == out.len() => Ok(out),
        _ => Err(SourcesError::Corrupt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_round_trips_with_its_body() {
        let open = Open { lz4: true, frame_window: 1024, source_window: 128 };
        let wire = open.encode(b"query");
        assert_eq!(&wire[..], b"o010000040000000080query");
        assert_eq!(Open::decode(&wire).unwrap(), (open, &b"query"[..]));
        let plain = Open::default().encode(b"");
        assert_eq!(Open::decode(&plain).unwrap(), (Open::default(), &b""[..]));
    }

    #[test]
    fn open_is_strict() {
        assert_eq!(Open::decode(b"o0100000400000000"), Err(SourcesError::Length("open")));
        assert_eq!(Open::decode(b"p010000040000000080"), Err(SourcesError::Tag(b'p')));
        assert_eq!(Open::decode(b"o020000040000000080"), Err(SourcesError::Flags(2)));
        assert_eq!(
            Open::decode(b"o01000004g0000000080"),
            Err(SourcesError::Number("frame window"))
        );
        assert_eq!(Open::decode(b"o000000000000000080"), Err(SourcesError::ZeroCredit));
        assert_eq!(Open::decode(b"o000000000100000000"), Err(SourcesError::ZeroCredit));
    }

    #[test]
    fn parts_have_fixed_layouts() {
        let cases: [(Part<'_>, &[u8]); 5] = [
            (Part::Announce { source: 1, header: b"hdr" }, b"a00000001hdr"),
            (Part::Frame { source: 0x1f, data: b"\x00x" }, b"f0000001f\x00x"),
            (Part::Compressed { source: 2, len: 300, data: b"zz" }, b"z000000020000012czz"),
            (Part::Complete { source: 3 }, b"c00000003"),
            (Part::Abort { source: 4, reason: "stalled" }, b"x00000004stalled"),
        ];
        for (part, wire) in cases {
            assert_eq!(part.encode(), wire);
            assert_eq!(Part::decode(wire).unwrap(), part);
        }
        // Empty headers and frames are legal; they are what the service sent.
        assert_eq!(Part::decode(b"a00000000").unwrap(), Part::Announce { source: 0, header: b"" });
    }

    #[test]
    fn parts_are_strict() {
        assert_eq!(Part::decode(b""), Err(SourcesError::Length("result")));
        assert_eq!(Part::decode(b"q00000001"), Err(SourcesError::Tag(b'q')));
        assert_eq!(Part::decode(b"f0000001"), Err(SourcesError::Length("frame")));
        assert_eq!(Part::decode(b"f0000000x"), Err(SourcesError::Number("source")));
        assert_eq!(Part::decode(b"z000000010000"), Err(SourcesError::Length("compressed frame")));
        assert_eq!(Part::decode(b"c00000001!"), Err(SourcesError::Length("complete")));
        assert_eq!(Part::decode(b"x00000001\xff"), Err(SourcesError::Reason));
    }

    #[test]
    fn controls_round_trip() {
        let cases: [(Control, &[u8]); 4] = [
            (Control::Credit { source: 7, frames: 512 }, b"f0000000700000200"),
            (Control::Sources { count: 1 }, b"s00000001"),
            (Control::Cancel { source: 9 }, b"x00000009"),
            (Control::CancelAll, b"X"),
        ];
        for (control, wire) in cases {
            assert_eq!(control.encode(), wire);
            assert_eq!(Control::decode(wire).unwrap(), control);
        }
    }

    #[test]
    fn controls_are_strict() {
        assert_eq!(Control::decode(b""), Err(SourcesError::Length("control")));
        assert_eq!(Control::decode(b"hello"), Err(SourcesError::Tag(b'h')));
        assert_eq!(Control::decode(b"f000000070000020"), Err(SourcesError::Length("credit")));
        assert_eq!(Control::decode(b"f00000007000002000"), Err(SourcesError::Length("credit")));
        assert_eq!(Control::decode(b"f0000000700000000"), Err(SourcesError::ZeroCredit));
        assert_eq!(Control::decode(b"s00000000"), Err(SourcesError::ZeroCredit));
        assert_eq!(Control::decode(b"x0000000-"), Err(SourcesError::Number("source")));
        assert_eq!(Control::decode(b"XX"), Err(SourcesError::Length("cancel all")));
    }

    #[cfg(feature = "lz4")]
    #[test]
    fn frames_are_compressed_only_when_it_helps() {
        let text = b"the same words again and again and again and again and again and again";
        let wire = encode_frame(5, text, true);
        let Part::Compressed { source: 5, len, data } = Part::decode(&wire).unwrap() else {
            panic!("not compressed: {wire:?}");
        };
        assert_eq!(decompress_frame(len, data, DEFAULT_MAX_FRAME).unwrap(), text);
        // Off, short, or incompressible: sent as is.
        assert!(matches!(Part::decode(&encode_frame(5, text, false)), Ok(Part::Frame { .. })));
        assert!(matches!(Part::decode(&encode_frame(5, b"short", true)), Ok(Part::Frame { .. })));
        // xorshift output: nothing for LZ4 to find.
        let mut x = 0x2545_f491_u32;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert!(matches!(Part::decode(&encode_frame(5, &noise, true)), Ok(Part::Frame { .. })));
    }

    #[cfg(feature = "lz4")]
    #[test]
    fn decompression_checks_the_length_before_allocating() {
        let frame = vec![b'a'; 1000];
        let block = lz4_flex::block::compress(&frame);
        // At the limit it passes; one past, it is refused without decompressing anything.
        assert_eq!(decompress_frame(1000, &block, 1000).unwrap(), frame);
        assert_eq!(
            decompress_frame(1000, &block, 999),
            Err(SourcesError::FrameTooLarge { len: 1000, max: 999 })
        );
        // A bomb: a tiny block claiming 4 GiB is refused on the length alone.
        assert_eq!(decompress_frame(u32::MAX, &block, u32::MAX), Err(SourcesError::Corrupt));
        // A length that does not match what the block holds.
        assert_eq!(decompress_frame(999, &block, 1000), Err(SourcesError::Corrupt));
        assert_eq!(decompress_frame(1001, &block, 2000), Err(SourcesError::Corrupt));
        assert_eq!(decompress_frame(10, b"\xff\xff", 2000), Err(SourcesError::Corrupt));
    }
}
