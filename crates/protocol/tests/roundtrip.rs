//! Property tests: encoding then decoding is the identity for every frame type, in any split.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use gotalk_protocol::{decode_version, Decoder, Frame, Id, Name, MAX_NAME_LEN};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// Cuts `chars` to at most `max` bytes of UTF-8, at a character boundary.
fn utf8_at_most(chars: Vec<char>, max: usize) -> String {
    let mut s = String::new();
    for c in chars {
        if s.len() + c.len_utf8() > max {
            break;
        }
        s.push(c);
    }
    s
}

fn id() -> impl Strategy<Value = Id> {
    any::<[u8; 4]>().prop_map(Id)
}

/// Names of 0 to 0xfff bytes: empty, short, long arbitrary UTF-8, and every ASCII length.
fn name() -> BoxedStrategy<Name> {
    prop_oneof![
        Just(String::new()),
        vec(any::<char>(), 0..32).prop_map(|c| utf8_at_most(c, MAX_NAME_LEN)),
        vec(any::<char>(), 0..=MAX_NAME_LEN).prop_map(|c| utf8_at_most(c, MAX_NAME_LEN)),
        (0..=MAX_NAME_LEN).prop_map(|n| "n".repeat(n)),
        Just("x".repeat(MAX_NAME_LEN)),
    ]
    .prop_map(|s| Name::new(s).unwrap())
    .boxed()
}

fn payload() -> BoxedStrategy<Bytes> {
    prop_oneof![Just(Bytes::new()), vec(any::<u8>(), 0..=4096).prop_map(Bytes::from)].boxed()
}

fn frame_with(name: BoxedStrategy<Name>, payload: BoxedStrategy<Bytes>) -> BoxedStrategy<Frame> {
    prop_oneof![
        (id(), name.clone(), payload.clone()).prop_map(|(id, op, payload)| Frame::SingleRequest {
            id,
            op,
            payload
        }),
        (id(), name.clone(), payload.clone()).prop_map(|(id, op, payload)| Frame::StreamRequest {
            id,
            op,
            payload
        }),
        (id(), payload.clone()).prop_map(|(id, payload)| Frame::StreamRequestPart { id, payload }),
        (id(), payload.clone()).prop_map(|(id, payload)| Frame::SingleResult { id, payload }),
        (id(), payload.clone()).prop_map(|(id, payload)| Frame::StreamResult { id, payload }),
        (id(), payload.clone()).prop_map(|(id, payload)| Frame::ErrorResult { id, payload }),
        (id(), any::<u32>(), payload.clone()).prop_map(|(id, wait, payload)| Frame::RetryResult {
            id,
            wait,
            payload
        }),
        (name, payload).prop_map(|(name, payload)| Frame::Notification { name, payload }),
        (any::<u16>(), any::<u32>()).prop_map(|(load, time)| Frame::Heartbeat { load, time }),
        any::<u32>().prop_map(|code| Frame::ProtocolError { code }),
    ]
    .boxed()
}

fn frame() -> impl Strategy<Value = Frame> {
    frame_with(name(), payload())
}

/// Frames small enough to feed a byte at a time.
fn small_frame() -> impl Strategy<Value = Frame> {
    frame_with(
        vec(any::<char>(), 0..8).prop_map(|c| Name::new(String::from_iter(c)).unwrap()).boxed(),
        vec(any::<u8>(), 0..16).prop_map(Bytes::from).boxed(),
    )
}

fn encode(frame: &Frame) -> BytesMut {
    let mut out = BytesMut::new();
    frame.encode(&mut out);
    out
}

fn encode_all(frames: &[Frame]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for frame in frames {
        frame.encode(&mut out);
    }
    out.to_vec()
}

/// Where each hex number field of `frame`'s encoding lies, with the value it must hold.
fn hex_fields(frame: &Frame) -> Vec<(Range<usize>, u32)> {
    let size = frame.payload().len() as u32;
    match frame {
        Frame::SingleRequest { op, .. } | Frame::StreamRequest { op, .. } => {
            let n = op.len();
            vec![(5..8, n as u32), (8 + n..16 + n, size)]
        }
        Frame::Notification { name, .. } => {
            let n = name.len();
            vec![(1..4, n as u32), (4 + n..12 + n, size)]
        }
        Frame::RetryResult { wait, .. } => vec![(5..13, *wait), (13..21, size)],
        Frame::Heartbeat { load, time } => vec![(1..5, u32::from(*load)), (5..13, *time)],
        Frame::ProtocolError { code } => vec![(1..9, *code)],
        // p, R, S and E: the type byte, the id, then the size.
        _ => vec![(5..13, size)],
    }
}

/// Positions at which to cut `len` bytes, sorted, from arbitrary indices.
fn cuts(len: usize, indices: &[Index]) -> Vec<usize> {
    let mut cuts: Vec<usize> = indices.iter().map(|i| i.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts.push(len);
    cuts
}

/// Feeds `wire` to a fresh decoder in the pieces `cuts` gives, checking after every piece that
/// the decoder may finish exactly when the bytes fed so far end on a frame boundary.
fn decode_in_pieces(wire: &[u8], cuts: &[usize], boundaries: &[usize]) -> Vec<Frame> {
    let mut decoder = Decoder::new();
    decoder.max_payload(u32::MAX);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    for &cut in cuts {
        buf.extend_from_slice(&wire[fed..cut]);
        fed = cut;
        while let Some(frame) = decoder.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
        let at_boundary = fed == 0 || boundaries.contains(&fed);
        assert_eq!(decoder.finish(&buf).is_ok(), at_boundary, "after {fed} bytes");
    }
    assert!(buf.is_empty());
    frames
}

fn boundaries(frames: &[Frame]) -> Vec<usize> {
    frames
        .iter()
        .scan(0, |end, frame| {
            *end += frame.encoded_len();
            Some(*end)
        })
        .collect()
}

proptest! {
    #[test]
    fn encode_then_decode_is_the_identity(frame in frame()) {
        let wire = encode(&frame);
        prop_assert_eq!(wire.len(), frame.encoded_len());
        prop_assert_eq!(frame.encoded_len(), frame.header_len() + frame.payload().len());

        let mut header = BytesMut::new();
        frame.encode_header(&mut header);
        prop_assert_eq!(header.len(), frame.header_len());
        prop_assert_eq!(&header[..], &wire[..frame.header_len()]);
        prop_assert_eq!(&wire[frame.header_len()..], &frame.payload()[..]);
        prop_assert_eq!(wire[0], frame.msg_type().byte());
        if let Some(id) = frame.id() {
            prop_assert_eq!(&wire[1..5], &id.0[..]);
        }

        // Every number is written as lowercase hex and holds the right value.
        for (range, value) in hex_fields(&frame) {
            let digits = &header[range];
            prop_assert!(
                digits.iter().all(|d| matches!(d, b'0'..=b'9' | b'a'..=b'f')),
                "not lowercase hex: {:?}", Bytes::copy_from_slice(digits)
            );
            let text = std::str::from_utf8(digits).unwrap();
            prop_assert_eq!(u32::from_str_radix(text, 16).unwrap(), value);
        }

        let mut buf = wire.clone();
        let mut decoder = Decoder::new();
        prop_assert_eq!(decoder.decode(&mut buf), Ok(Some(frame.clone())));
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoder.finish(&buf), Ok(()));

        // Uppercase hex digits decode the same.
        let mut upper = wire.clone();
        for (range, _) in hex_fields(&frame) {
            upper[range].make_ascii_uppercase();
        }
        prop_assert_eq!(Decoder::new().decode(&mut upper), Ok(Some(frame)));
    }

    #[test]
    fn limits_set_exactly_to_the_frame_pass_and_one_less_fails(frame in frame()) {
        let name_len = match &frame {
            Frame::SingleRequest { op, .. } | Frame::StreamRequest { op, .. } => op.len(),
            Frame::Notification { name, .. } => name.len(),
            _ => 0,
        };
        let payload_len = frame.payload().len() as u32;
        let wire = encode(&frame);

        let mut decoder = Decoder::new();
        decoder.max_name_len(name_len).max_payload(payload_len);
        prop_assert_eq!(decoder.decode(&mut wire.clone()), Ok(Some(frame.clone())));

        if name_len > 0 {
            let mut decoder = Decoder::new();
            decoder.max_name_len(name_len - 1);
            prop_assert!(decoder.decode(&mut wire.clone()).is_err());
        }
        if payload_len > 0 {
            let mut decoder = Decoder::new();
            decoder.max_payload(payload_len - 1);
            // Refused from the header alone.
            let mut header = BytesMut::from(&wire[..frame.header_len()]);
            prop_assert!(decoder.decode(&mut header).is_err());
        }
    }

    #[test]
    fn arbitrary_splits_give_the_same_frames(
        frames in vec(frame(), 0..6),
        indices in vec(any::<Index>(), 0..24),
    ) {
        let wire = encode_all(&frames);
        let expected_len: usize = frames.iter().map(Frame::encoded_len).sum();
        prop_assert_eq!(wire.len(), expected_len);
        let cuts = cuts(wire.len(), &indices);
        prop_assert_eq!(decode_in_pieces(&wire, &cuts, &boundaries(&frames)), frames);
    }

    #[test]
    fn byte_at_a_time_gives_the_same_frames(frames in vec(small_frame(), 0..8)) {
        let wire = encode_all(&frames);
        let cuts: Vec<usize> = (1..=wire.len()).collect();
        prop_assert_eq!(decode_in_pieces(&wire, &cuts, &boundaries(&frames)), frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..512),
        indices in vec(any::<Index>(), 0..8),
        max_payload in prop_oneof![Just(u32::MAX), 0..64u32],
    ) {
        feed_garbage(&bytes, &indices, max_payload);
        let _ = decode_version(&mut BytesMut::from(&bytes[..]));
    }

    #[test]
    fn mostly_valid_bytes_never_panic(
        frames in vec(small_frame(), 1..6),
        mutations in vec((any::<Index>(), any::<u8>()), 1..4),
        indices in vec(any::<Index>(), 0..8),
    ) {
        // Arbitrary bytes rarely get past the type byte; corrupting valid frames does.
        let mut wire = encode_all(&frames);
        for (at, byte) in mutations {
            let at = at.index(wire.len());
            wire[at] = byte;
        }
        feed_garbage(&wire, &indices, 64);
    }
}

/// Feeds `bytes` in pieces; every result must be a frame, "need more" or an error.
fn feed_garbage(bytes: &[u8], indices: &[Index], max_payload: u32) {
    let mut decoder = Decoder::new();
    decoder.max_payload(max_payload);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    for cut in cuts(bytes.len(), indices) {
        buf.extend_from_slice(&bytes[fed..cut]);
        fed = cut;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    // Whatever decodes re-encodes to a frame of the stated length.
                    assert_eq!(encode(&frame).len(), frame.encoded_len());
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        let _ = decoder.payload_remaining(buf.len());
        let _ = decoder.finish(&buf);
    }
}
