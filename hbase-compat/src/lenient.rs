//! Null-tolerant argument reading. HBase's own Thrift gateway treats an
//! absent list or map argument (happybase sends `columns = None` for "all
//! columns") as null, meaning empty; the generated Rust processor insists
//! every argument is present. This input-protocol wrapper supplies an empty
//! list or map for each such argument a call leaves out, so ordinary HBase
//! Thrift1 clients work unchanged. Nothing else is altered.

use thrift::protocol::{
    TFieldIdentifier, TInputProtocol, TInputProtocolFactory, TListIdentifier, TMapIdentifier, TMessageIdentifier, TSetIdentifier,
    TStructIdentifier, TType,
};
use thrift::transport::TReadTransport;

/// Per call, the list and map arguments a client may leave out: (field id,
/// type), as declared in HBase's Thrift1 interface.
const NULLABLE: &[(&str, &[(i16, TType)])] = &[
    ("createTable", &[(2, TType::List)]),
    ("get", &[(4, TType::Map)]),
    ("getVer", &[(5, TType::Map)]),
    ("getVerTs", &[(6, TType::Map)]),
    ("getRow", &[(3, TType::Map)]),
    ("getRowWithColumns", &[(3, TType::List), (4, TType::Map)]),
    ("getRowTs", &[(4, TType::Map)]),
    ("getRowWithColumnsTs", &[(3, TType::List), (5, TType::Map)]),
    ("getRows", &[(2, TType::List), (3, TType::Map)]),
    ("getRowsWithColumns", &[(2, TType::List), (3, TType::List), (4, TType::Map)]),
    ("getRowsTs", &[(2, TType::List), (4, TType::Map)]),
    ("getRowsWithColumnsTs", &[(2, TType::List), (3, TType::List), (5, TType::Map)]),
    ("mutateRow", &[(3, TType::List), (4, TType::Map)]),
    ("mutateRowTs", &[(3, TType::List), (5, TType::Map)]),
    ("mutateRows", &[(2, TType::List), (3, TType::Map)]),
    ("mutateRowsTs", &[(2, TType::List), (4, TType::Map)]),
    ("deleteAll", &[(4, TType::Map)]),
    ("deleteAllTs", &[(5, TType::Map)]),
    ("deleteAllRow", &[(3, TType::Map)]),
    ("incrementRows", &[(1, TType::List)]),
    ("deleteAllRowTs", &[(4, TType::Map)]),
    ("scannerOpenWithScan", &[(3, TType::Map)]),
    ("scannerOpen", &[(3, TType::List), (4, TType::Map)]),
    ("scannerOpenWithStop", &[(4, TType::List), (5, TType::Map)]),
    ("scannerOpenWithPrefix", &[(3, TType::List), (4, TType::Map)]),
    ("scannerOpenTs", &[(3, TType::List), (5, TType::Map)]),
    ("scannerOpenWithStopTs", &[(4, TType::List), (6, TType::Map)]),
    ("checkAndPut", &[(7, TType::Map)]),
];

/// Wraps an input protocol; see the module doc.
pub struct NullTolerantInput {
    inner: Box<dyn TInputProtocol + Send>,
    /// The call being read.
    method: String,
    /// Struct nesting: the call's arguments are depth 1.
    depth: i32,
    /// Argument ids seen in the current call.
    seen: Vec<i16>,
    /// Arguments still to supply, last first.
    missing: Vec<(i16, TType)>,
    /// The real end of the arguments, returned after the supplied ones.
    stop_after_missing: bool,
    /// A supplied argument is being read: its collection begin, end and
    /// field end come from here, not the wire.
    supplying: Option<TType>,
    /// Whether the supplied collection has been begun (so its end is ours).
    supplied_open: bool,
}

impl NullTolerantInput {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn TInputProtocol + Send>) -> Self {
        NullTolerantInput {
            inner,
            method: String::new(),
            depth: 0,
            seen: Vec::new(),
            missing: Vec::new(),
            stop_after_missing: false,
            supplying: None,
            supplied_open: false,
        }
    }

    fn next_supplied(&mut self) -> Option<TFieldIdentifier> {
        let (id, field_type) = self.missing.pop()?;
        self.supplying = Some(field_type);
        Some(TFieldIdentifier { name: None, field_type, id: Some(id) })
    }
}

impl TInputProtocol for NullTolerantInput {
    fn read_message_begin(&mut self) -> thrift::Result<TMessageIdentifier> {
        let message = self.inner.read_message_begin()?;
        self.method.clone_from(&message.name);
        self.depth = 0;
        self.seen.clear();
        self.missing.clear();
        self.stop_after_missing = false;
        Ok(message)
    }
    fn read_message_end(&mut self) -> thrift::Result<()> {
        self.inner.read_message_end()
    }
    fn read_struct_begin(&mut self) -> thrift::Result<Option<TStructIdentifier>> {
        self.depth += 1;
        self.inner.read_struct_begin()
    }
    fn read_struct_end(&mut self) -> thrift::Result<()> {
        self.depth -= 1;
        self.inner.read_struct_end()
    }
    fn read_field_begin(&mut self) -> thrift::Result<TFieldIdentifier> {
        if let Some(supplied) = self.next_supplied() {
            return Ok(supplied);
        }
        if self.stop_after_missing {
            self.stop_after_missing = false;
            return Ok(TFieldIdentifier { name: None, field_type: TType::Stop, id: None });
        }
        let field = self.inner.read_field_begin()?;
        if self.depth == 1 {
            match (field.field_type, field.id) {
                (TType::Stop, _) => {
                    let nullable = NULLABLE.iter().find(|(method, _)| *method == self.method).map_or(&[][..], |(_, fields)| fields);
                    self.missing = nullable.iter().rev().filter(|(id, _)| !self.seen.contains(id)).copied().collect();
                    if let Some(supplied) = self.next_supplied() {
                        self.stop_after_missing = true;
                        return Ok(supplied);
                    }
                }
                (_, Some(id)) => self.seen.push(id),
                _ => {}
            }
        }
        Ok(field)
    }
    fn read_field_end(&mut self) -> thrift::Result<()> {
        if self.supplying.take().is_some() {
            return Ok(());
        }
        self.inner.read_field_end()
    }
    fn read_bool(&mut self) -> thrift::Result<bool> {
        self.inner.read_bool()
    }
    fn read_bytes(&mut self) -> thrift::Result<Vec<u8>> {
        self.inner.read_bytes()
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
        self.inner.read_string()
    }
    fn read_list_begin(&mut self) -> thrift::Result<TListIdentifier> {
        if self.supplying.is_some() && !self.supplied_open {
            self.supplied_open = true;
            return Ok(TListIdentifier::new(TType::String, 0));
        }
        self.inner.read_list_begin()
    }
    fn read_list_end(&mut self) -> thrift::Result<()> {
        if self.supplied_open {
            self.supplied_open = false;
            return Ok(());
        }
        self.inner.read_list_end()
    }
    fn read_set_begin(&mut self) -> thrift::Result<TSetIdentifier> {
        self.inner.read_set_begin()
    }
    fn read_set_end(&mut self) -> thrift::Result<()> {
        self.inner.read_set_end()
    }
    fn read_map_begin(&mut self) -> thrift::Result<TMapIdentifier> {
        if self.supplying.is_some() && !self.supplied_open {
            self.supplied_open = true;
            return Ok(TMapIdentifier::new(TType::String, TType::String, 0));
        }
        self.inner.read_map_begin()
    }
    fn read_map_end(&mut self) -> thrift::Result<()> {
        if self.supplied_open {
            self.supplied_open = false;
            return Ok(());
        }
        self.inner.read_map_end()
    }
    fn read_byte(&mut self) -> thrift::Result<u8> {
        self.inner.read_byte()
    }
}

/// Makes [`NullTolerantInput`]s around another factory's protocols.
pub struct NullTolerantInputFactory<F>(pub F);

impl<F: TInputProtocolFactory> TInputProtocolFactory for NullTolerantInputFactory<F> {
    fn create(&self, transport: Box<dyn TReadTransport + Send>) -> Box<dyn TInputProtocol + Send> {
        Box::new(NullTolerantInput::new(self.0.create(transport)))
    }
}
