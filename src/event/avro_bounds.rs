//! What a writer schema may make a decoder do, checked before any datum is read: a decoder's
//! recursion follows the schema, so a hostile schema could overflow the stack.
//!
//! A schema is refused if it recurses or nests deeper than [`MAX_SCHEMA_DEPTH`], named types
//! followed. One that passes is compiled into the [`DatumPlan`] that checks and reads its datums.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::Name;

use super::avro_datum::DatumPlan;

/// How deeply a writer schema may nest records, arrays, maps and unions, named types followed: an
/// event needs three levels; the bound keeps the decoder's recursion far from the stack's end.
pub const MAX_SCHEMA_DEPTH: usize = 32;

/// A writer schema that passed the checks, and the walk compiled from it.
#[derive(Debug)]
pub struct BoundedSchema {
    pub schema: Schema,
    pub plan: DatumPlan,
}

/// A schema being checked, with its named types for following references.
struct Checked {
    schema: Schema,
    names: HashMap<Name, Schema>,
}

impl BoundedSchema {
    /// Checks `schema`; the error says why it is refused, naming the record at fault.
    pub fn new(schema: Schema) -> Result<Self, String> {
        let mut names = HashMap::new();
        collect_names(&schema, &mut names);
        let checked = Checked { schema, names };
        let depth = checked.depth(&checked.schema, &mut Vec::new(), &mut HashMap::new())?;
        if depth > MAX_SCHEMA_DEPTH {
            return Err(format!(
                "the Avro schema nests {depth} levels deep (at most {MAX_SCHEMA_DEPTH}); events \
                 need 3"
            ));
        }
        let plan = DatumPlan::compile(&checked.schema, &checked.names)?;
        Ok(BoundedSchema {
            schema: checked.schema,
            plan,
        })
    }
}

impl Checked {
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
}

/// Every named type of a schema (records, enums, fixed), by full name.
pub(super) fn collect_names(schema: &Schema, names: &mut HashMap<Name, Schema>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bounded(schema: &str) -> Result<BoundedSchema, String> {
        BoundedSchema::new(Schema::parse_str(schema).unwrap())
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
}
