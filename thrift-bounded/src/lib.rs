//! Size limits on what a Thrift peer may make us allocate: the compat
//! server reads its clients through this, and histflow's Thrift client
//! reads a gateway's answers through it.
//!
//! thrift's binary protocol allocates a string or a list from the length
//! prefix a peer sends, before any of it arrives: a negative length panics
//! the reading thread and a huge one aborts the process. This wrapper
//! reads those lengths itself, refuses any outside the limits, and reads a
//! string's bytes as they arrive, so memory follows what the peer actually
//! sent. It also caps the bytes one message may carry in all.
//!
//! thrift's processor answers a call whose arguments fail to read with an
//! exception and goes on reading the connection, which is then out of step
//! with the peer: after a refused length, every further read fails, so the
//! connection ends.

use thrift::protocol::{
    TFieldIdentifier, TInputProtocol, TInputProtocolFactory, TListIdentifier, TMapIdentifier, TMessageIdentifier, TMessageType,
    TSetIdentifier, TStructIdentifier,
};
use thrift::transport::TReadTransport;
use thrift::{ProtocolError, ProtocolErrorKind};

/// Most bytes of one string or binary value.
pub const MAX_VALUE_BYTES: usize = 16 << 20;
/// Most elements of one list, set or map.
pub const MAX_ELEMENTS: usize = 100_000;
/// Most bytes (strings, plus one per collection element) of one message.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// What a string's buffer starts at, whatever length it claims.
const FIRST_CHUNK: usize = 64 << 10;

/// Wraps a binary input protocol; see the module doc.
pub struct BoundedInput {
    inner: Box<dyn TInputProtocol + Send>,
    /// Bytes the current message has carried so far.
    message_bytes: usize,
    /// A length was refused: the stream is out of step; nothing more is
    /// read from it.
    refused: bool,
}

fn too_large(message: String) -> thrift::Error {
    thrift::Error::Protocol(ProtocolError { kind: ProtocolErrorKind::SizeLimit, message })
}

fn negative(what: &str, size: i32) -> thrift::Error {
    thrift::Error::Protocol(ProtocolError { kind: ProtocolErrorKind::NegativeSize, message: format!("{what} of size {size}") })
}

impl BoundedInput {
    /// Wraps `inner`, a binary input protocol.
    pub fn new(inner: Box<dyn TInputProtocol + Send>) -> Self {
        BoundedInput { inner, message_bytes: 0, refused: false }
    }

    /// Refuses the rest of the stream with `error`.
    fn refuse(&mut self, error: thrift::Error) -> thrift::Error {
        self.refused = true;
        error
    }

    /// Counts `bytes` against the message's limit.
    fn charge(&mut self, bytes: usize) -> thrift::Result<()> {
        self.message_bytes = self.message_bytes.saturating_add(bytes);
        if self.message_bytes > MAX_MESSAGE_BYTES {
            return Err(self.refuse(too_large(format!("a message of more than {MAX_MESSAGE_BYTES} bytes"))));
        }
        Ok(())
    }

    /// A collection's element count, checked.
    fn elements(&mut self, what: &str, size: i32) -> thrift::Result<()> {
        let count = usize::try_from(size).map_err(|_| negative(what, size));
        let count = count.map_err(|error| self.refuse(error))?;
        if count > MAX_ELEMENTS {
            return Err(self.refuse(too_large(format!("a {what} of {count} elements (at most {MAX_ELEMENTS})"))));
        }
        self.charge(count)
    }
}

impl TInputProtocol for BoundedInput {
    fn read_message_begin(&mut self) -> thrift::Result<TMessageIdentifier> {
        if self.refused {
            return Err(thrift::Error::Protocol(ProtocolError {
                kind: ProtocolErrorKind::InvalidData,
                message: "the connection sent a length over the limits; it is closed".to_owned(),
            }));
        }
        self.message_bytes = 0;
        // Strict binary protocol: version 1 in the top half, the type in
        // the lowest byte, then the name and the sequence number.
        let header = self.inner.read_i32()? as u32;
        if header & 0xffff_0000 != 0x8001_0000 {
            return Err(self.refuse(thrift::Error::Protocol(ProtocolError {
                kind: ProtocolErrorKind::BadVersion,
                message: format!("not a strict binary-protocol message (header {header:#010x})"),
            })));
        }
        let message_type = TMessageType::try_from((header & 0xff) as u8).map_err(|error| self.refuse(error))?;
        let name = self.read_string()?;
        let sequence_number = self.inner.read_i32()?;
        Ok(TMessageIdentifier::new(name, message_type, sequence_number))
    }
    fn read_message_end(&mut self) -> thrift::Result<()> {
        self.inner.read_message_end()
    }
    fn read_struct_begin(&mut self) -> thrift::Result<Option<TStructIdentifier>> {
        self.inner.read_struct_begin()
    }
    fn read_struct_end(&mut self) -> thrift::Result<()> {
        self.inner.read_struct_end()
    }
    fn read_field_begin(&mut self) -> thrift::Result<TFieldIdentifier> {
        self.inner.read_field_begin()
    }
    fn read_field_end(&mut self) -> thrift::Result<()> {
        self.inner.read_field_end()
    }
    fn read_bool(&mut self) -> thrift::Result<bool> {
        self.inner.read_bool()
    }
    fn read_bytes(&mut self) -> thrift::Result<Vec<u8>> {
        let size = self.inner.read_i32()?;
        let length = usize::try_from(size).map_err(|_| negative("string", size));
        let length = length.map_err(|error| self.refuse(error))?;
        if length > MAX_VALUE_BYTES {
            return Err(self.refuse(too_large(format!("a string of {length} bytes (at most {MAX_VALUE_BYTES})"))));
        }
        self.charge(length)?;
        let mut bytes = Vec::with_capacity(length.min(FIRST_CHUNK));
        for _ in 0..length {
            bytes.push(self.inner.read_byte()?);
        }
        Ok(bytes)
    }
    fn read_i8(&mut self) -> thrift::Result<i8> {
        self.inner.read_i8()
    }
    fn read_i16(&mut self) -> thrift::Result<i16> {
        self.inner.read_i16()
    }
    fn read_i32(&mut self) -> thrift::Result<i32> {
        self.inner.read_i32()
    }
    fn read_i64(&mut self) -> thrift::Result<i64> {
        self.inner.read_i64()
    }
    fn read_double(&mut self) -> thrift::Result<f64> {
        self.inner.read_double()
    }
    fn read_string(&mut self) -> thrift::Result<String> {
        let bytes = self.read_bytes()?;
        String::from_utf8(bytes).map_err(thrift::Error::from)
    }
    fn read_list_begin(&mut self) -> thrift::Result<TListIdentifier> {
        let list = self.inner.read_list_begin()?;
        self.elements("list", list.size)?;
        Ok(list)
    }
    fn read_list_end(&mut self) -> thrift::Result<()> {
        self.inner.read_list_end()
    }
    fn read_set_begin(&mut self) -> thrift::Result<TSetIdentifier> {
        let set = self.inner.read_set_begin()?;
        self.elements("set", set.size)?;
        Ok(set)
    }
    fn read_set_end(&mut self) -> thrift::Result<()> {
        self.inner.read_set_end()
    }
    fn read_map_begin(&mut self) -> thrift::Result<TMapIdentifier> {
        let map = self.inner.read_map_begin()?;
        self.elements("map", map.size)?;
        Ok(map)
    }
    fn read_map_end(&mut self) -> thrift::Result<()> {
        self.inner.read_map_end()
    }
    fn read_byte(&mut self) -> thrift::Result<u8> {
        self.inner.read_byte()
    }
}

/// Makes [`BoundedInput`]s around another factory's (binary) protocols.
pub struct BoundedInputFactory<F>(pub F);

impl<F: TInputProtocolFactory> TInputProtocolFactory for BoundedInputFactory<F> {
    fn create(&self, transport: Box<dyn TReadTransport + Send>) -> Box<dyn TInputProtocol + Send> {
        Box::new(BoundedInput::new(self.0.create(transport)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thrift::protocol::TBinaryInputProtocol;
    use thrift::transport::TBufferChannel;

    /// A bounded protocol reading `bytes`.
    fn reading(bytes: &[u8]) -> BoundedInput {
        let mut channel = TBufferChannel::with_capacity(bytes.len(), 0);
        channel.set_readable_bytes(bytes);
        BoundedInput::new(Box::new(TBinaryInputProtocol::new(channel, true)))
    }

    #[test]
    fn lengths_outside_the_limits_are_errors_not_allocations() {
        for length in [-1i32, i32::MAX, (MAX_VALUE_BYTES + 1) as i32] {
            let refused = reading(&length.to_be_bytes()).read_bytes();
            assert!(matches!(refused, Err(thrift::Error::Protocol(_))), "{length}: {refused:?}");
        }
        let mut list = vec![11u8];
        list.extend((-5i32).to_be_bytes());
        assert!(reading(&list).read_list_begin().is_err());
        let mut huge = vec![11u8];
        huge.extend(i32::MAX.to_be_bytes());
        assert!(reading(&huge).read_list_begin().is_err());
    }

    #[test]
    fn a_string_claiming_more_than_arrives_fails_on_what_arrived() {
        let mut bytes = 1000i32.to_be_bytes().to_vec();
        bytes.extend(b"short");
        assert!(reading(&bytes).read_bytes().is_err());
        let mut fine = 5i32.to_be_bytes().to_vec();
        fine.extend(b"hello");
        assert_eq!(reading(&fine).read_string().unwrap(), "hello");
    }

    #[test]
    fn after_a_refused_length_the_connection_reads_nothing_more() {
        let mut bytes = (-1i32).to_be_bytes().to_vec();
        bytes.extend(0x8001_0001u32.to_be_bytes());
        bytes.extend(3i32.to_be_bytes());
        bytes.extend(b"get");
        bytes.extend(7i32.to_be_bytes());
        let mut input = reading(&bytes);
        assert!(input.read_bytes().is_err());
        assert!(input.read_message_begin().is_err(), "a well-formed message after a refusal was read");
    }

    #[test]
    fn message_names_are_bounded_too() {
        let mut call = 0x8001_0001u32.to_be_bytes().to_vec();
        call.extend(i32::MAX.to_be_bytes());
        assert!(reading(&call).read_message_begin().is_err());
        let mut fine = 0x8001_0001u32.to_be_bytes().to_vec();
        fine.extend(3i32.to_be_bytes());
        fine.extend(b"get");
        fine.extend(7i32.to_be_bytes());
        let begun = reading(&fine).read_message_begin().unwrap();
        assert_eq!((begun.name.as_str(), begun.sequence_number), ("get", 7));
    }
}
