//! A writer schema compiled into one walk over its datums, which both checks and reads them.
//!
//! The walk refuses what could make a decoder misbehave (a length or block count beyond the bytes
//! left, a union branch or enum symbol that does not exist, an int out of range, a string that is
//! not UTF-8) and, on the way, picks out the fields an event needs, borrowing their strings from
//! the datum. Every other field is stepped over without being built, so an event costs one pass
//! and no allocation, whatever else the producer's schema carries.
//!
//! Fields are found by name, as the schema was compiled: `uuid`, `event_id`, `page_name`,
//! `event_timestamp` and `event_details{event_name, event_type}` of the top-level record.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::Name;

/// Items of a datum that take no bytes (nulls, empty records) beyond which it is refused.
const ZERO_WIDTH_ITEMS: usize = 1 << 16;

/// A writer schema as the walk follows it: a tree of nodes whose named types are shared.
#[derive(Debug)]
pub struct DatumPlan {
    nodes: Vec<Node>,
    root: NodeId,
}

type NodeId = usize;

#[derive(Debug)]
enum Node {
    Null,
    Boolean,
    /// A zig-zag variable-length integer.
    Number(Number),
    /// `count` bytes (float, double, fixed, duration, a decimal on a fixed); `kind` names it in
    /// rejections.
    Width {
        count: usize,
        kind: &'static str,
    },
    /// A length-prefixed string (read) or bytes (only stepped over).
    Text {
        string: bool,
        kind: &'static str,
    },
    Enum(Vec<String>),
    Union(Vec<NodeId>),
    Record(Vec<(Role, NodeId)>),
    Array(NodeId),
    Map(NodeId),
}

#[derive(Debug, Clone, Copy)]
enum Number {
    /// An `int`: it must fit 32 bits, as a reader of the schema expects.
    Int,
    Long,
    Millis,
    Micros,
    /// Dates and times of day: numbers the event fields do not accept.
    OtherInt,
    OtherLong,
}

/// What a record field is to an event, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Uuid,
    EventId,
    PageName,
    EventTimestamp,
    EventDetails,
    EventName,
    EventType,
    Other,
}

impl Role {
    fn of(name: &str) -> Role {
        match name {
            "uuid" => Role::Uuid,
            "event_id" => Role::EventId,
            "page_name" => Role::PageName,
            "event_timestamp" => Role::EventTimestamp,
            "event_details" => Role::EventDetails,
            "event_name" => Role::EventName,
            "event_type" => Role::EventType,
            _ => Role::Other,
        }
    }
}

/// One value an event field was given, before its field's rules judge it. Strings borrow from the
/// datum, enum symbols from the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf<'d, 'p> {
    Null,
    Text(&'d str),
    Symbol(&'p str),
    /// An `int` or a `long` without a logical type.
    Number(i64),
    TimestampMillis(i64),
    TimestampMicros(i64),
    /// Any other value, by the name rejections give its type.
    Other(&'static str),
}

/// `event_details` as the datum gave it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Details<'d, 'p> {
    #[default]
    Absent,
    Record {
        event_name: Option<Leaf<'d, 'p>>,
        event_type: Option<Leaf<'d, 'p>>,
    },
    Other(&'static str),
}

/// The values of an event's fields in a datum; `None` where the schema has no such field.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EventValues<'d, 'p> {
    pub uuid: Option<Leaf<'d, 'p>>,
    pub event_id: Option<Leaf<'d, 'p>>,
    pub page_name: Option<Leaf<'d, 'p>>,
    pub event_timestamp: Option<Leaf<'d, 'p>>,
    pub event_details: Details<'d, 'p>,
}

/// A well-formed datum: an event's values, or the type of a top-level value that is no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datum<'d, 'p> {
    Record(EventValues<'d, 'p>),
    NotARecord(&'static str),
}

impl DatumPlan {
    /// Compiles `schema`, whose named types are `names`. The schema must have passed
    /// [`super::avro_bounds::BoundedSchema`]'s checks: no recursion, a bounded depth.
    pub fn compile(schema: &Schema, names: &HashMap<Name, Schema>) -> Result<Self, String> {
        let mut compiler = Compiler {
            names,
            nodes: Vec::new(),
            named: HashMap::new(),
        };
        let root = compiler.node(schema)?;
        Ok(DatumPlan {
            nodes: compiler.nodes,
            root,
        })
    }

    /// Checks that `datum` is exactly one well-formed datum of the schema; the error names the
    /// byte offset at fault.
    pub fn check(&self, datum: &[u8]) -> Result<(), String> {
        self.read(datum).map(drop)
    }

    /// Checks `datum` and reads the event's values from it.
    pub fn read<'d>(&self, datum: &'d [u8]) -> Result<Datum<'d, '_>, String> {
        let mut cursor = Cursor {
            bytes: datum,
            length: datum.len(),
            zero_width_left: ZERO_WIDTH_ITEMS,
        };
        let read = match &self.nodes[self.root] {
            Node::Record(fields) => Datum::Record(self.event(fields, &mut cursor)?),
            Node::Union(_) => {
                self.skip(self.root, &mut cursor)?;
                Datum::NotARecord("a union")
            }
            _ => Datum::NotARecord(self.leaf(self.root, &mut cursor)?.kind()),
        };
        match cursor.bytes.len() {
            0 => Ok(read),
            left => Err(format!(
                "{left} bytes left after the record (another schema?)"
            )),
        }
    }

    fn event<'d>(
        &self,
        fields: &[(Role, NodeId)],
        cursor: &mut Cursor<'d>,
    ) -> Result<EventValues<'d, '_>, String> {
        let mut values = EventValues::default();
        for &(role, node) in fields {
            let slot = match role {
                Role::Uuid => &mut values.uuid,
                Role::EventId => &mut values.event_id,
                Role::PageName => &mut values.page_name,
                Role::EventTimestamp => &mut values.event_timestamp,
                Role::EventDetails => {
                    values.event_details = self.details(node, cursor)?;
                    continue;
                }
                _ => {
                    self.skip(node, cursor)?;
                    continue;
                }
            };
            *slot = Some(self.leaf(node, cursor)?);
        }
        Ok(values)
    }

    fn details<'d>(
        &self,
        node: NodeId,
        cursor: &mut Cursor<'d>,
    ) -> Result<Details<'d, '_>, String> {
        match &self.nodes[node] {
            Node::Null => Ok(Details::Absent),
            Node::Union(branches) => {
                let branch = cursor.index(branches.len(), "union branch")?;
                self.details(branches[branch], cursor)
            }
            Node::Record(fields) => {
                let (mut event_name, mut event_type) = (None, None);
                for &(role, node) in fields {
                    match role {
                        Role::EventName => event_name = Some(self.leaf(node, cursor)?),
                        Role::EventType => event_type = Some(self.leaf(node, cursor)?),
                        _ => self.skip(node, cursor)?,
                    }
                }
                Ok(Details::Record {
                    event_name,
                    event_type,
                })
            }
            _ => Ok(Details::Other(self.leaf(node, cursor)?.kind())),
        }
    }

    /// Reads one value; a union is followed to its branch, a container is stepped over.
    fn leaf<'d>(&self, node: NodeId, cursor: &mut Cursor<'d>) -> Result<Leaf<'d, '_>, String> {
        Ok(match &self.nodes[node] {
            Node::Null => Leaf::Null,
            Node::Boolean => {
                let at = cursor.offset();
                match cursor.take(1, "boolean")? {
                    [0 | 1] => Leaf::Other("a boolean"),
                    [other] => {
                        return Err(format!("the boolean at byte {at} is {other}, not 0 or 1"));
                    }
                    _ => unreachable!("take(1) yields one byte"),
                }
            }
            Node::Number(number) => {
                let at = cursor.offset();
                let value = cursor.varint("number")?;
                match number {
                    Number::Int | Number::OtherInt if i32::try_from(value).is_err() => {
                        return Err(format!("the int at byte {at} is out of range ({value})"));
                    }
                    Number::Int | Number::Long => Leaf::Number(value),
                    Number::Millis => Leaf::TimestampMillis(value),
                    Number::Micros => Leaf::TimestampMicros(value),
                    Number::OtherInt | Number::OtherLong => Leaf::Other("a logical value"),
                }
            }
            Node::Width { count, kind } => {
                cursor.take(*count, kind)?;
                Leaf::Other(kind)
            }
            Node::Text { string, kind } => {
                let at = cursor.offset();
                let bytes = cursor.length_prefixed()?;
                match std::str::from_utf8(bytes) {
                    Ok(text) if *string => Leaf::Text(text),
                    Ok(_) => Leaf::Other(kind),
                    // Bytes may hold anything; strings must be UTF-8.
                    Err(_) if !*string => Leaf::Other(kind),
                    Err(e) => {
                        return Err(format!("the string at byte {at} is not UTF-8 ({e})"));
                    }
                }
            }
            Node::Enum(symbols) => {
                Leaf::Symbol(&symbols[cursor.index(symbols.len(), "enum symbol")?])
            }
            Node::Union(branches) => {
                let branch = cursor.index(branches.len(), "union branch")?;
                self.leaf(branches[branch], cursor)?
            }
            Node::Record(_) | Node::Array(_) | Node::Map(_) => {
                self.skip(node, cursor)?;
                Leaf::Other(match &self.nodes[node] {
                    Node::Record(_) => "a record",
                    Node::Array(_) => "an array",
                    _ => "a map",
                })
            }
        })
    }

    /// Steps over one value, checking it.
    fn skip(&self, node: NodeId, cursor: &mut Cursor) -> Result<(), String> {
        match &self.nodes[node] {
            Node::Record(fields) => fields
                .iter()
                .try_for_each(|&(_, field)| self.skip(field, cursor)),
            Node::Array(items) => cursor.blocks(|cursor| self.skip(*items, cursor)),
            Node::Map(values) => cursor.blocks(|cursor| {
                let at = cursor.offset();
                let key = cursor.length_prefixed()?;
                std::str::from_utf8(key)
                    .map_err(|e| format!("the map key at byte {at} is not UTF-8 ({e})"))?;
                self.skip(*values, cursor)
            }),
            Node::Union(branches) => {
                let branch = cursor.index(branches.len(), "union branch")?;
                self.skip(branches[branch], cursor)
            }
            _ => self.leaf(node, cursor).map(drop),
        }
    }
}

impl Leaf<'_, '_> {
    /// The name of the value's type, for rejections.
    pub fn kind(&self) -> &'static str {
        match self {
            Leaf::Null => "null",
            Leaf::Text(_) | Leaf::Symbol(_) => "a string",
            Leaf::Number(_) => "a number",
            Leaf::TimestampMillis(_) | Leaf::TimestampMicros(_) => "a timestamp",
            Leaf::Other(kind) => kind,
        }
    }
}

struct Compiler<'s> {
    names: &'s HashMap<Name, Schema>,
    nodes: Vec<Node>,
    /// Named types compiled once, however often the schema refers to them.
    named: HashMap<&'s Name, NodeId>,
}

impl<'s> Compiler<'s> {
    fn node(&mut self, schema: &'s Schema) -> Result<NodeId, String> {
        let name = match schema {
            Schema::Record(record) => Some(&record.name),
            Schema::Enum(e) => Some(&e.name),
            Schema::Fixed(fixed) => Some(&fixed.name),
            Schema::Ref { name } => {
                let named = self.names.get(name).ok_or_else(|| {
                    format!("the Avro schema refers to an undefined type `{name}`")
                })?;
                return self.node(named);
            }
            _ => None,
        };
        if let Some(&id) = name.and_then(|name| self.named.get(name)) {
            return Ok(id);
        }
        let node = match schema {
            Schema::Null => Node::Null,
            Schema::Boolean => Node::Boolean,
            Schema::Int => Node::Number(Number::Int),
            Schema::Long => Node::Number(Number::Long),
            Schema::TimestampMillis | Schema::LocalTimestampMillis => Node::Number(Number::Millis),
            Schema::TimestampMicros | Schema::LocalTimestampMicros => Node::Number(Number::Micros),
            Schema::Date | Schema::TimeMillis => Node::Number(Number::OtherInt),
            Schema::TimeMicros | Schema::TimestampNanos | Schema::LocalTimestampNanos => {
                Node::Number(Number::OtherLong)
            }
            Schema::Float => Node::Width {
                count: 4,
                kind: "a floating-point number",
            },
            Schema::Double => Node::Width {
                count: 8,
                kind: "a floating-point number",
            },
            Schema::Fixed(fixed) => Node::Width {
                count: fixed.size,
                kind: "bytes",
            },
            Schema::Duration => Node::Width {
                count: 12,
                kind: "a logical value",
            },
            // A UUID is a string with a logical type: as good an id as any string.
            Schema::String | Schema::Uuid => Node::Text {
                string: true,
                kind: "a string",
            },
            Schema::Bytes => Node::Text {
                string: false,
                kind: "bytes",
            },
            Schema::BigDecimal => Node::Text {
                string: false,
                kind: "a logical value",
            },
            Schema::Decimal(decimal) => match &*decimal.inner {
                Schema::Fixed(fixed) => Node::Width {
                    count: fixed.size,
                    kind: "a logical value",
                },
                _ => Node::Text {
                    string: false,
                    kind: "a logical value",
                },
            },
            Schema::Enum(e) => Node::Enum(e.symbols.clone()),
            Schema::Union(union) => Node::Union(
                union
                    .variants()
                    .iter()
                    .map(|variant| self.node(variant))
                    .collect::<Result<_, _>>()?,
            ),
            Schema::Record(record) => Node::Record(
                record
                    .fields
                    .iter()
                    .map(|field| Ok((Role::of(&field.name), self.node(&field.schema)?)))
                    .collect::<Result<_, String>>()?,
            ),
            Schema::Array(array) => Node::Array(self.node(&array.items)?),
            Schema::Map(map) => Node::Map(self.node(&map.types)?),
            Schema::Ref { .. } => unreachable!("references are followed above"),
        };
        self.nodes.push(node);
        let id = self.nodes.len() - 1;
        if let Some(name) = name {
            self.named.insert(name, id);
        }
        Ok(id)
    }
}

/// The bytes of a datum not yet walked.
struct Cursor<'d> {
    bytes: &'d [u8],
    length: usize,
    zero_width_left: usize,
}

impl<'d> Cursor<'d> {
    fn offset(&self) -> usize {
        self.length - self.bytes.len()
    }

    fn take(&mut self, count: usize, what: &str) -> Result<&'d [u8], String> {
        if count > self.bytes.len() {
            return Err(format!(
                "a {what} of {count} bytes at byte {} runs past the record's end ({} bytes left)",
                self.offset(),
                self.bytes.len()
            ));
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    /// A zig-zag variable-length long.
    fn varint(&mut self, what: &str) -> Result<i64, String> {
        let mut value: u64 = 0;
        for (i, &byte) in self.bytes.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[i + 1..];
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(format!(
            "the {what} at byte {} is not a complete variable-length integer",
            self.offset()
        ))
    }

    fn length_prefixed(&mut self) -> Result<&'d [u8], String> {
        let at = self.offset();
        let length = self.varint("length")?;
        let length = usize::try_from(length)
            .map_err(|_| format!("negative length {length} at byte {at}"))?;
        self.take(length, "string or bytes")
    }

    fn index(&mut self, count: usize, what: &str) -> Result<usize, String> {
        let at = self.offset();
        let index = self.varint(what)?;
        usize::try_from(index)
            .ok()
            .filter(|&i| i < count)
            .ok_or_else(|| {
                format!("{what} {index} at byte {at} does not exist (there are {count})")
            })
    }

    /// The blocks of an array or map, each a count (negative: followed by its size in bytes) and
    /// that many items, ending at a count of zero.
    fn blocks(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        loop {
            let at = self.offset();
            let count = self.varint("block count")?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                // The block's size in bytes, a hint for readers that skip: ignored, as Avro's own
                // readers do; the items are walked all the same.
                self.varint("block size")?;
            }
            let count = count.unsigned_abs();
            if count > (self.bytes.len() + self.zero_width_left) as u64 {
                return Err(format!(
                    "the block at byte {at} claims {count} items, more than its {} bytes left \
                     could hold",
                    self.bytes.len()
                ));
            }
            for _ in 0..count {
                let before = self.bytes.len();
                item(self)?;
                if self.bytes.len() == before {
                    self.zero_width_left = self
                        .zero_width_left
                        .checked_sub(1)
                        .ok_or_else(|| format!("more than {ZERO_WIDTH_ITEMS} items of no bytes"))?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use apache_avro::Schema;

    use super::super::avro_bounds::BoundedSchema;

    fn bounded(schema: &str) -> Result<BoundedSchema, String> {
        BoundedSchema::new(Schema::parse_str(schema).unwrap())
    }

    const WITH_MAP: &str = r#"{"type":"record","name":"E","fields":[
        {"name":"uuid","type":"string"},
        {"name":"tags","type":{"type":"map","values":"string"}},
        {"name":"seen","type":{"type":"array","items":"null"}}]}"#;

    #[test]
    fn a_block_count_beyond_the_bytes_left_is_refused_before_any_allocation() {
        let schema = bounded(WITH_MAP).unwrap();
        // uuid "u", then a map block claiming 2^60 entries: 11 bytes ask for exabytes.
        let mut hostile = vec![2, b'u'];
        hostile.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20]);
        let error = schema.plan.check(&hostile).unwrap_err();
        assert!(
            error.contains("byte 2") && error.contains("items"),
            "{error}"
        );
        // A negative count, its size, then a map entry cut short.
        let error = schema.plan.check(&[2, b'u', 1, 0x7e]).unwrap_err();
        assert!(error.contains("byte 4"), "{error}");
        // Nulls take no bytes: an allowance, not the bytes left, bounds them.
        let error = schema
            .plan
            .check(&[2, b'u', 0, 0xfe, 0xff, 0xff, 0xff, 0x0f, 0])
            .unwrap_err();
        assert!(error.contains("items"), "{error}");
        assert!(schema.plan.check(&[2, b'u', 0, 6, 0]).is_ok());
        // A good datum: one tag, then the end of both blocks.
        let good = apache_avro::to_avro_datum(
            &schema.schema,
            apache_avro::types::Value::Record(vec![
                ("uuid".into(), "u1".into()),
                (
                    "tags".into(),
                    apache_avro::types::Value::Map([("k".into(), "v".into())].into()),
                ),
                (
                    "seen".into(),
                    apache_avro::types::Value::Array(vec![apache_avro::types::Value::Null; 3]),
                ),
            ]),
        )
        .unwrap();
        assert_eq!(schema.plan.check(&good), Ok(()));
        let error = schema.plan.check(&good[..good.len() - 1]).unwrap_err();
        assert!(error.contains("byte"), "{error}");
    }

    proptest::proptest! {
        /// Whatever the bytes, the walk agrees with the decoder: a datum it passes decodes.
        #[test]
        fn what_passes_the_walk_decodes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let schema = bounded(WITH_MAP).unwrap();
            if schema.plan.check(&bytes).is_ok() {
                let mut rest = &bytes[..];
                proptest::prop_assert!(apache_avro::from_avro_datum(&schema.schema, &mut rest, None).is_ok());
                proptest::prop_assert!(rest.is_empty());
            }
        }
    }
}
