//! The frame decoder: arbitrary bytes in arbitrary pieces.

use bytes::BytesMut;
use gotalk_protocol::{decode_version, DecodeError, Decoder, Frame};

/// What decoding a whole input produced: the frames, then the error that stopped it, if any,
/// and whether the input may end where it did.
type Outcome = (Vec<Frame>, Option<DecodeError>, bool);

/// The first byte picks the chunking and the limits; the rest is the wire.
///
/// Checks that the decoder never panics, that the frames and the error do not depend on how
/// the bytes were split, that each frame honours the limits, that `finish` agrees with what
/// is left over, and that every frame decoded re-encodes to bytes that decode to itself.
pub fn decode_frames(data: &[u8]) {
    let Some((&knob, wire)) = data.split_first() else { return };
    // Small limits half the time, so inputs reach the limit checks without being huge.
    let (max_payload, max_name) = if knob & 0x80 != 0 { (64, 16) } else { (1 << 20, 4095) };
    let decoder = || {
        let mut d = Decoder::new();
        d.max_payload(max_payload).max_name_len(max_name);
        d
    };

    let mut version = BytesMut::from(wire);
    let _ = decode_version(&mut version);

    let whole = run(decoder(), wire, &[wire.len().max(1)]);
    let sizes: Vec<usize> = (0..16).map(|i| 1 + (usize::from(knob) + 7 * i) % 13).collect();
    let chunked = run(decoder(), wire, &sizes);
    assert_eq!(whole.0, chunked.0, "frames depend on chunking");
    assert_eq!(whole.1, chunked.1, "the error depends on chunking");
    assert_eq!(whole.2, chunked.2, "where a message ends depends on chunking");

    for frame in &whole.0 {
        assert!(frame.payload().len() <= max_payload as usize, "payload over the limit");
        let name_len = match frame {
            Frame::SingleRequest { op, .. } | Frame::StreamRequest { op, .. } => op.len(),
            Frame::Notification { name, .. } => name.len(),
            _ => 0,
        };
        assert!(name_len <= max_name, "name over the limit");
        let mut again = BytesMut::new();
        frame.encode(&mut again);
        assert_eq!(again.len(), frame.encoded_len(), "encoded_len is wrong for {frame:?}");
        let mut d = decoder();
        assert_eq!(d.decode(&mut again), Ok(Some(frame.clone())), "round trip");
        assert!(again.is_empty(), "round trip left bytes behind");
        assert_eq!(d.finish(&again), Ok(()));
    }
}

/// Feeds `wire` to `decoder` in pieces of the given sizes (cycled), decoding after each.
fn run(mut decoder: Decoder, wire: &[u8], sizes: &[usize]) -> Outcome {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = wire;
    let mut sizes = sizes.iter().cycle();
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e), false),
            }
        }
        if rest.is_empty() {
            break;
        }
        let n = sizes.next().copied().unwrap_or(1).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
    let clean = decoder.finish(&buf).is_ok();
    (frames, None, clean)
}
