//! Creating the tables, and bringing an existing table's schema to what this release writes.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use iceberg::TableCreation;
use iceberg::spec::{NestedFieldRef, Schema, TableProperties, Type};
use iceberg::table::Table;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};

use super::catalog::Warehouse;
use super::tables::TableKind;

impl Warehouse {
    /// Creates the namespace and the pipeline's tables where they do not exist yet.
    pub async fn ensure_tables(&self, buckets: u32) -> Result<()> {
        // Another pipeline starting at the same moment may create them first: that is fine.
        if !self.catalog.namespace_exists(&self.namespace).await?
            && let Err(e) = self
                .catalog
                .create_namespace(&self.namespace, HashMap::new())
                .await
            && !self.catalog.namespace_exists(&self.namespace).await?
        {
            return Err(e).with_context(|| format!("cannot create namespace {:?}", self.namespace));
        }
        for kind in self.kinds() {
            let ident = self.ident(kind);
            if self.catalog.table_exists(&ident).await? {
                let table = self.catalog.load_table(&ident).await?;
                check_compatible(&table, kind, buckets)?;
                self.evolve_schema(table, kind).await?;
                continue;
            }
            let creation = TableCreation::builder()
                .name(ident.name().to_string())
                .schema(kind.schema())
                .partition_spec(kind.partition_spec(buckets))
                .properties([
                    (
                        TableProperties::PROPERTY_DEFAULT_FILE_FORMAT.to_string(),
                        "parquet".to_string(),
                    ),
                    (
                        "write.parquet.compression-codec".to_string(),
                        "zstd".to_string(),
                    ),
                ])
                .build();
            if let Err(e) = self.catalog.create_table(&self.namespace, creation).await
                && !self.catalog.table_exists(&ident).await?
            {
                return Err(e).with_context(|| format!("cannot create table {ident}"));
            }
        }
        Ok(())
    }

    /// Brings an existing table's schema to what this release writes: our columns that it lacks
    /// (it was created by an older release) are added as optional columns, and columns that other
    /// tools added are kept (written as nulls). A column whose type conflicts with ours, or a
    /// required column we do not write, is refused with its name.
    async fn evolve_schema(&self, table: Table, kind: TableKind) -> Result<()> {
        let ours = kind.schema();
        let missing = schema_changes(&table, &ours)?;
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = missing.iter().map(|f| f.name.as_str()).collect();
        let transaction = Transaction::new(&table);
        let update = missing
            .iter()
            .fold(transaction.update_schema(), |action, field| {
                action.add_column(AddColumn::optional(
                    &field.name,
                    (*field.field_type).clone(),
                ))
            });
        let evolved = update
            .apply(transaction)?
            .commit(self.catalog.as_ref())
            .await;
        if let Err(e) = evolved {
            // Another pipeline starting at the same moment may have added them first.
            let table = self.load(kind).await?;
            if !schema_changes(&table, &ours)?.is_empty() {
                return Err(e).with_context(|| {
                    format!("cannot add the columns {names:?} to {}", table.identifier())
                });
            }
        }
        tracing::info!(table = %table.identifier(), columns = ?names, "added columns to the table's schema");
        Ok(())
    }
}

/// Our columns that `table` lacks; an error naming the column if the table has one that conflicts:
/// of another type than ours, or required but not written by us.
fn schema_changes(table: &Table, ours: &Schema) -> Result<Vec<NestedFieldRef>> {
    let theirs = table.metadata().current_schema();
    let mut missing = Vec::new();
    for want in ours.as_struct().fields() {
        match theirs.as_struct().field_by_name(&want.name) {
            None => missing.push(Arc::clone(want)),
            Some(have) if same_type(&have.field_type, &want.field_type) => {}
            Some(have) => bail!(
                "table {} has a column `{}` of type {}, where sessionize writes {}: rename or drop \
                 that column, or give another --iceberg-table",
                table.identifier(),
                have.name,
                have.field_type,
                want.field_type
            ),
        }
    }
    for have in theirs.as_struct().fields() {
        if have.required && ours.as_struct().field_by_name(&have.name).is_none() {
            bail!(
                "table {} has a required column `{}` that sessionize does not write: make it \
                 optional, or give another --iceberg-table",
                table.identifier(),
                have.name
            );
        }
    }
    Ok(missing)
}

/// Types equal but for field ids and the nullability of nested fields.
fn same_type(a: &Type, b: &Type) -> bool {
    match (a, b) {
        (Type::List(a), Type::List(b)) => {
            same_type(&a.element_field.field_type, &b.element_field.field_type)
        }
        (Type::Primitive(a), Type::Primitive(b)) => a == b,
        _ => false,
    }
}

fn check_compatible(table: &Table, kind: TableKind, buckets: u32) -> Result<()> {
    let wanted = kind.partition_spec(buckets);
    let spec = table.metadata().default_partition_spec();
    let same = spec.fields().len() == wanted.fields().len()
        && spec
            .fields()
            .iter()
            .zip(wanted.fields())
            .all(|(have, want)| {
                have.transform == want.transform && have.source_id == want.source_id
            });
    if !same {
        bail!(
            "table {} exists with another partitioning ({:?}); use the --buckets it was created \
             with, or another --iceberg-table",
            table.identifier(),
            spec.fields()
        );
    }
    Ok(())
}
