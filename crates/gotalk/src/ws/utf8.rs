//! UTF-8 checked as it arrives: a text message's bytes come in pieces that may split a
//! character, and a bad byte must be found in the piece that carries it, not at the end of
//! the message.

/// The state between pieces: the start of a character whose last bytes have not come yet.
#[derive(Debug, Default, Clone)]
pub(crate) struct Utf8 {
    pending: [u8; 4],
    len: usize,
}

/// The bytes are not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalid;

impl Utf8 {
    /// Checks the next piece. A character cut at its end is kept for the next piece.
    pub(crate) fn feed(&mut self, mut input: &[u8]) -> Result<(), Invalid> {
        // Finish the character the last piece cut, a byte at a time: at most three more.
        while self.len > 0 {
            let Some((&byte, rest)) = input.split_first() else { return Ok(()) };
            input = rest;
            self.pending[self.len] = byte;
            self.len += 1;
            match std::str::from_utf8(&self.pending[..self.len]) {
                Ok(_) => self.len = 0,
                // Still cut short (four bytes are always a whole character or a bad one).
                Err(e) if e.error_len().is_none() && self.len < 4 => {}
                Err(_) => return Err(Invalid),
            }
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(Invalid),
            Err(e) => {
                let tail = &input[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.len = tail.len();
                Ok(())
            }
        }
    }

    /// Ends the text: a character still cut is invalid.
    pub(crate) fn finish(&mut self) -> Result<(), Invalid> {
        let whole = self.len == 0;
        self.len = 0;
        if whole {
            Ok(())
        } else {
            Err(Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` cut at every pair of points and compares with a whole check.
    fn agrees_at_every_cut(bytes: &[u8]) {
        let whole = std::str::from_utf8(bytes).is_ok();
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let mut utf8 = Utf8::default();
                let ok = [&bytes[..i], &bytes[i..j], &bytes[j..]]
                    .iter()
                    .all(|piece| utf8.feed(piece).is_ok())
                    && utf8.finish().is_ok();
                assert_eq!(ok, whole, "{bytes:x?} cut at {i} and {j}");
            }
        }
    }

    #[test]
    fn pieces_agree_with_a_whole_check() {
        agrees_at_every_cut("héllo €uro 𝄞 clef".as_bytes());
        agrees_at_every_cut(b"ok \xf0\x9d\x84");
        agrees_at_every_cut(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited");
        agrees_at_every_cut(b"\xff");
        agrees_at_every_cut(b"a\xc0\xafb");
        agrees_at_every_cut(b"\xf4\x90\x80\x80");
        agrees_at_every_cut(b"");
    }

    #[test]
    fn a_bad_byte_is_found_in_its_own_piece() {
        let mut utf8 = Utf8::default();
        assert_eq!(utf8.feed(b"fine \xe2\x82"), Ok(()), "a cut euro sign may still end well");
        assert_eq!(utf8.feed(b"\x28"), Err(Invalid), "but not with this byte");
        let mut utf8 = Utf8::default();
        assert_eq!(utf8.feed(b"\xed\xa0"), Err(Invalid), "a surrogate fails before its end");
    }
}
