//! Sources' parts: the client's control parts, the server's result parts, the open prefix
//! and compressed frames.

use gotalk_protocol::sources::{decompress_frame, encode_frame, Control, Open, Part};

/// The first byte picks what the rest is decoded as.
///
/// Checks that decoding never panics, that whatever decodes re-encodes to bytes that decode
/// to the same value, and that a compressed frame never decompresses beyond its limit or to
/// anything but its declared length.
pub fn sources_control(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 4 {
        0 => {
            if let Ok(control) = Control::decode(rest) {
                assert_eq!(Control::decode(&control.encode()), Ok(control));
            }
        }
        1 => {
            if let Ok(part) = Part::decode(rest) {
                assert_eq!(Part::decode(&part.encode()), Ok(part));
                if let Part::Compressed { len, data, .. } = part {
                    let max = 64 * 1024;
                    if let Ok(frame) = decompress_frame(len, data, max) {
                        assert_eq!(frame.len(), len as usize);
                        assert!(frame.len() <= max as usize);
                    }
                }
            }
        }
        2 => {
            if let Ok((open, body)) = Open::decode(rest) {
                assert!(open.frame_window > 0 && open.source_window > 0);
                assert_eq!(Open::decode(&open.encode(body)), Ok((open, body)));
            }
        }
        _ => {
            // Any frame the server compresses, the client gets back byte for byte.
            let wire = encode_frame(7, rest, true);
            let data = match Part::decode(&wire).expect("an encoded frame decodes") {
                Part::Frame { data, .. } => data.to_vec(),
                Part::Compressed { len, data, .. } => {
                    decompress_frame(len, data, u32::MAX).expect("our own frame decompresses")
                }
                other => panic!("encode_frame produced {other:?}"),
            };
            assert_eq!(data, rest);
        }
    }
}
