//! The binary encoding Nimbus's on-disk formats are written in: fixed-width little-endian
//! integers, IEEE-754 floats by their bits, and length-prefixed UTF-8 strings. Nothing here
//! depends on the host: no `usize`, no native endianness.
//!
//! [`Reader`] never panics on bad input: every short or malformed read is a [`DecodeError`]
//! naming the field it was reading.

/// Appends encoded values to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// Returns an empty writer with room for `capacity` bytes.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// Appends one byte.
    pub fn put_u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Appends a `u16`, little-endian.
    pub fn put_u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a `u32`, little-endian.
    pub fn put_u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a `u64`, little-endian.
    pub fn put_u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends an `f64` as its IEEE-754 bits, little-endian.
    pub fn put_f64(&mut self, v: f64) {
        self.put_u64(v.to_bits());
    }

    /// Appends raw bytes with no length prefix.
    pub fn put_bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// Appends a string as a `u16` byte length and its UTF-8 bytes.
    ///
    /// # Panics
    /// If the string is longer than 65,535 bytes: callers encode only names they validated
    /// to be short.
    pub fn put_str(&mut self, v: &str) {
        let len = u16::try_from(v.len()).expect("encoded strings are validated to be short");
        self.put_u16(len);
        self.put_bytes(v.as_bytes());
    }

    /// Returns the bytes written so far.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Returns the encoded bytes.
    #[must_use]
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads encoded values from a byte slice, front to back.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Returns a reader over `buf`.
    #[must_use]
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Returns how many bytes are left.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Reads `n` raw bytes.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] when fewer than `n` bytes are left.
    pub fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { field });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.bytes(N, field)?);
        Ok(out)
    }

    /// Reads one byte.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] at the end of the input.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// Reads a little-endian `u16`.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] at the end of the input.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_le_bytes)
    }

    /// Reads a little-endian `u32`.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] at the end of the input.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_le_bytes)
    }

    /// Reads a little-endian `u64`.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] at the end of the input.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// Reads an `f64` from its little-endian IEEE-754 bits.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] at the end of the input.
    pub fn f64(&mut self, field: &'static str) -> Result<f64, DecodeError> {
        self.u64(field).map(f64::from_bits)
    }

    /// Reads a string written by [`Writer::put_str`].
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] or [`DecodeError::InvalidUtf8`].
    pub fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let len = self.u16(field)?;
        let bytes = self.bytes(usize::from(len), field)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    /// Succeeds only if every byte was consumed.
    ///
    /// # Errors
    /// [`DecodeError::TrailingBytes`] when bytes are left over.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                count: self.buf.len(),
            })
        }
    }
}

/// Why encoded bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("truncated while reading {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// A string field is not UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        field: &'static str,
    },
    /// Bytes are left after the last field.
    #[error("{count} unexpected bytes after the last field")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn values_round_trip(a: u8, b: u16, c: u32, d: u64, e: f64, s in "\\PC{0,40}") {
            let mut w = Writer::default();
            w.put_u8(a);
            w.put_u16(b);
            w.put_u32(c);
            w.put_u64(d);
            w.put_f64(e);
            w.put_str(&s);
            let bytes = w.into_inner();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(r.u8("a").unwrap(), a);
            prop_assert_eq!(r.u16("b").unwrap(), b);
            prop_assert_eq!(r.u32("c").unwrap(), c);
            prop_assert_eq!(r.u64("d").unwrap(), d);
            prop_assert_eq!(r.f64("e").unwrap().to_bits(), e.to_bits());
            prop_assert_eq!(r.str("s").unwrap(), s.as_str());
            r.finish().unwrap();
        }

        #[test]
        fn truncated_input_is_an_error_not_a_panic(s in "\\PC{0,40}", cut in 0usize..64) {
            let mut w = Writer::default();
            w.put_u64(7);
            w.put_str(&s);
            let bytes = w.into_inner();
            let cut = cut.min(bytes.len());
            let mut r = Reader::new(&bytes[..cut]);
            let whole = r.u64("n").is_ok() && r.str("s").is_ok();
            prop_assert_eq!(whole, cut == bytes.len());
        }
    }
}
