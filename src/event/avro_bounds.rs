//! What a writer schema and a datum may make the Avro decoder do, checked before apache_avro
//! decodes anything: its recursion follows the schema, and it reserves room for as many items as
//! a block header claims, so a hostile schema could overflow the stack and 22 hostile bytes could
//! ask for gigabytes.
//!
//! A schema is refused if it recurses or nests deeper than [`MAX_SCHEMA_DEPTH`], named types
//! followed. A datum is walked once without building anything: every length and block count must
//! fit in the bytes left (items that take no bytes, such as nulls, draw on a small allowance), and
//! every union or enum index must exist.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::Name;

/// How deeply a writer schema may nest records, arrays, maps and unions, named types followed: an
/// event needs three levels; the bound keeps the decoder's recursion far from the stack's end.
pub const MAX_SCHEMA_DEPTH: usize = 32;

/// Items of a datum that take no bytes (nulls, empty records) beyond which it is refused.
const ZERO_WIDTH_ITEMS: usize = 1 << 16;

/// A writer schema that passed the checks, with its named types for following references.
#[derive(Debug)]
pub struct BoundedSchema {
    pub schema: Schema,
    names: HashMap<Name, Schema>,
}

impl BoundedSchema {
    /// Checks `schema`; the error says why it is refused, naming the record at fault.
    pub fn new(schema: Schema) -> Result<Self, String> {
        let mut names = HashMap::new();
        collect_names(&schema, &mut names);
        let bounded = BoundedSchema { schema, names };
        let depth = bounded.depth(&bounded.schema, &mut Vec::new(), &mut HashMap::new())?;
        if depth > MAX_SCHEMA_DEPTH {
            return Err(format!(
                "the Avro schema nests {depth} levels deep (at most {MAX_SCHEMA_DEPTH}); events \
                 need 3"
            ));
        }
        Ok(bounded)
    }

    /// How many levels of the decoder's recursion a datum of `schema` takes.
    fn depth<'a>(
        &'a self,
        schema: &'a Schema,
        open: &mut Vec<&'a Name>,
        known: &mut HashMap<&'a Name, usize>,
    ) -> Result<usize, String> {
        let mut deepest = |schemas: &mut dyn Iterator<Item = &'a Schema>,
                           open: &mut Vec<&'a Name>|
         -> Result<usize, String> {
            let mut deepest = 0;
            for schema in schemas {
                deepest = deepest.max(self.depth(schema, open, known)?);
                if deepest > MAX_SCHEMA_DEPTH {
                    break;
                }
            }
            Ok(deepest + 1)
        };
        Ok(match schema {
            Schema::Record(record) => {
                open.push(&record.name);
                let depth = deepest(&mut record.fields.iter().map(|f| &f.schema), open)?;
                open.pop();
                depth
            }
            Schema::Array(array) => deepest(&mut std::iter::once(&*array.items), open)?,
            Schema::Map(map) => deepest(&mut std::iter::once(&*map.types), open)?,
            Schema::Union(union) => deepest(&mut union.variants().iter(), open)?,
            Schema::Decimal(decimal) => deepest(&mut std::iter::once(&*decimal.inner), open)?,
            Schema::Ref { name } => {
                if open.contains(&name) {
                    return Err(format!(
                        "the Avro schema is recursive (record `{}` contains itself), which events \
                         never need and which could nest without bound",
                        name.name
                    ));
                }
                if let Some(&depth) = known.get(name) {
                    return Ok(depth);
                }
                let named = self.named(name)?;
                let depth = self.depth(named, open, known)?;
                known.insert(name, depth);
                depth
            }
            _ => 0,
        })
    }

    fn named(&self, name: &Name) -> Result<&Schema, String> {
        self.names
            .get(name)
            .ok_or_else(|| format!("the Avro schema refers to an undefined type `{name}`"))
    }

    /// Checks that `datum` is exactly one well-formed datum of the schema whose lengths and
    /// counts fit in its bytes. The error names the byte offset at fault.
    pub fn check_datum(&self, datum: &[u8]) -> Result<(), String> {
        let mut cursor = Cursor {
            bytes: datum,
            length: datum.len(),
            zero_width_left: ZERO_WIDTH_ITEMS,
        };
        self.skip(&self.schema, &mut cursor)?;
        match cursor.bytes.len() {
            0 => Ok(()),
            left => Err(format!(
                "{left} bytes left after the record (another schema?)"
            )),
        }
    }

    fn skip(&self, schema: &Schema, cursor: &mut Cursor) -> Result<(), String> {
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => cursor.take(1, "boolean"),
            Schema::Int
            | Schema::Long
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => cursor.varint("number").map(drop),
            Schema::Float => cursor.take(4, "float"),
            Schema::Double => cursor.take(8, "double"),
            Schema::Bytes | Schema::String | Schema::BigDecimal | Schema::Uuid => {
                cursor.length_prefixed()
            }
            Schema::Fixed(fixed) => cursor.take(fixed.size, "fixed"),
            Schema::Duration => cursor.take(12, "duration"),
            Schema::Decimal(decimal) => self.skip(&decimal.inner, cursor),
            Schema::Enum(symbols) => cursor.index(symbols.symbols.len(), "enum symbol").map(drop),
            Schema::Union(union) => {
                let variants = union.variants();
                let index = cursor.index(variants.len(), "union branch")?;
                self.skip(&variants[index], cursor)
            }
            Schema::Record(record) => record
                .fields
                .iter()
                .try_for_each(|field| self.skip(&field.schema, cursor)),
            Schema::Array(array) => cursor.blocks(|cursor| self.skip(&array.items, cursor)),
            Schema::Map(map) => cursor.blocks(|cursor| {
                cursor.length_prefixed()?;
                self.skip(&map.types, cursor)
            }),
            Schema::Ref { name } => self.skip(self.named(name)?, cursor),
        }
    }
}

/// Every named type of a schema (records, enums, fixed), by full name.
fn collect_names(schema: &Schema, names: &mut HashMap<Name, Schema>) {
    match schema {
        Schema::Record(record) => {
            names.insert(record.name.clone(), schema.clone());
            for field in &record.fields {
                collect_names(&field.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.clone(), schema.clone());
        }
        Schema::Fixed(f) => {
            names.insert(f.name.clone(), schema.clone());
        }
        Schema::Array(array) => collect_names(&array.items, names),
        Schema::Map(map) => collect_names(&map.types, names),
        Schema::Union(union) => union
            .variants()
            .iter()
            .for_each(|v| collect_names(v, names)),
        Schema::Decimal(decimal) => collect_names(&decimal.inner, names),
        _ => {}
    }
}

/// The bytes of a datum not yet walked.
struct Cursor<'a> {
    bytes: &'a [u8],
    length: usize,
    zero_width_left: usize,
}

impl Cursor<'_> {
    fn offset(&self) -> usize {
        self.length - self.bytes.len()
    }

    fn take(&mut self, count: usize, what: &str) -> Result<(), String> {
        if count > self.bytes.len() {
            return Err(format!(
                "a {what} of {count} bytes at byte {} runs past the record's end ({} bytes left)",
                self.offset(),
                self.bytes.len()
            ));
        }
        self.bytes = &self.bytes[count..];
        Ok(())
    }

    /// A zig-zag variable-length long.
    fn varint(&mut self, what: &str) -> Result<i64, String> {
        let at = self.offset();
        let mut value: u64 = 0;
        for (i, &byte) in self.bytes.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[i + 1..];
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(format!(
            "the {what} at byte {at} is not a complete variable-length integer"
        ))
    }

    fn length_prefixed(&mut self) -> Result<(), String> {
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
                let size = self.varint("block size")?;
                if usize::try_from(size).map_or(true, |size| size > self.bytes.len()) {
                    return Err(format!(
                        "the block at byte {at} claims {size} bytes, more than the {} left",
                        self.bytes.len()
                    ));
                }
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
    use super::*;

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
        let error = schema.check_datum(&hostile).unwrap_err();
        assert!(
            error.contains("byte 2") && error.contains("items"),
            "{error}"
        );
        // A negative count with a block size beyond the end.
        let error = schema.check_datum(&[2, b'u', 1, 0x7e]).unwrap_err();
        assert!(error.contains("claims"), "{error}");
        // Nulls take no bytes: an allowance, not the bytes left, bounds them.
        let error = schema
            .check_datum(&[2, b'u', 0, 0xfe, 0xff, 0xff, 0xff, 0x0f, 0])
            .unwrap_err();
        assert!(error.contains("items"), "{error}");
        assert!(schema.check_datum(&[2, b'u', 0, 6, 0]).is_ok());
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
        assert_eq!(schema.check_datum(&good), Ok(()));
        let error = schema.check_datum(&good[..good.len() - 1]).unwrap_err();
        assert!(error.contains("byte"), "{error}");
    }

    #[test]
    fn depth_follows_named_types() {
        let arrays = |inner: &str| {
            (0..20).fold(inner.to_string(), |inner, _| {
                format!(r#"{{"type":"array","items":{inner}}}"#)
            })
        };
        // `A` is 21 levels deep where it is defined, and used again under 20 more.
        let a = format!(
            r#"{{"type":"record","name":"A","fields":[{{"name":"w","type":{}}}]}}"#,
            arrays(r#""int""#)
        );
        let deep = format!(
            r#"{{"type":"record","name":"E","fields":[{{"name":"a","type":{a}}},
                {{"name":"b","type":{}}}]}}"#,
            arrays(r#""A""#)
        );
        let error = bounded(&deep).unwrap_err();
        assert!(error.contains("levels deep"), "{error}");
        let reused = r#"{"type":"record","name":"E","fields":[
            {"name":"a","type":{"type":"record","name":"A","fields":[{"name":"v","type":"int"}]}},
            {"name":"b","type":{"type":"record","name":"B","fields":[{"name":"x","type":"A"}]}},
            {"name":"c","type":{"type":"array","items":"B"}}]}"#;
        assert!(bounded(reused).is_ok());
    }

    proptest::proptest! {
        /// Whatever the bytes, the walk agrees with the decoder: a datum it passes decodes.
        #[test]
        fn what_passes_the_walk_decodes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let schema = bounded(WITH_MAP).unwrap();
            if schema.check_datum(&bytes).is_ok() {
                let mut rest = &bytes[..];
                proptest::prop_assert!(apache_avro::from_avro_datum(&schema.schema, &mut rest, None).is_ok());
                proptest::prop_assert!(rest.is_empty());
            }
        }
    }
}
