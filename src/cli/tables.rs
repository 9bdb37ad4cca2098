//! Where the tables and checkpoints are: flags shared by `run` and the commands that read what it
//! wrote (`inspect`, `report`), and those commands' own flags.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::kafka::{DEFAULT_TOPIC, KafkaArgs};
use super::{SECOND, duration_flag};
use crate::config::{PipelineConfig, identifier, parse_key_value};
use crate::sink::catalog::CatalogSettings;
use crate::storage::Location;

/// The warehouse, the catalog and the tables' names.
#[derive(Args)]
pub struct TablesArgs {
    /// The warehouse: a directory, or s3://BUCKET/PREFIX (with --catalog-uri and the s3.*
    /// --catalog-options); new tables' files (for the SQL catalogs), checkpoints, and the default
    /// SQLite catalog (catalog.db).
    #[arg(long, default_value = "warehouse")]
    pub warehouse: Location,
    /// Where checkpoints go instead of <warehouse>/_sessionize: a directory or s3://BUCKET/PREFIX,
    /// reached by every process of a cluster.
    #[arg(long, help_heading = "Checkpoints")]
    pub checkpoint_location: Option<Location>,
    /// The Iceberg catalog: sqlite:PATH (default: <warehouse>/catalog.db), postgres://USER@HOST/DB
    /// (a SQL catalog on PostgreSQL) or http(s)://HOST/PATH (a REST catalog).
    #[arg(long)]
    pub catalog_uri: Option<String>,
    /// A catalog property, e.g. credential=ID:SECRET, token=T, header.X-Tenant=a, warehouse=NAME;
    /// repeatable; `key=@FILE` reads the value from FILE; SESSIONIZE_CATALOG_OPTION adds more,
    /// one key=value per line. Values are never logged.
    #[arg(long = "catalog-option", value_parser = parse_key_value)]
    pub catalog_options: Vec<(String, String)>,
    /// How long an unreachable (or, for SQLite, locked) catalog is waited for at start, and the
    /// longest any one call to the catalog may take (bare: seconds).
    #[arg(long, default_value = "30")]
    pub catalog_timeout: String,
    /// The namespace of the tables.
    #[arg(long, default_value = "sessions")]
    pub iceberg_database: String,
    /// The sessions table; side tables get the suffixes _quarantine and _late_events.
    #[arg(long, default_value = "user_sessions")]
    pub iceberg_table: String,
    /// The table of the sessions open now, replaced at every commit (default: the sessions
    /// table's name with the suffix _open); an empty name keeps none.
    #[arg(long)]
    pub open_sessions_table: Option<String>,
}

impl TablesArgs {
    /// A pipeline configuration over `inputs` with these tables, and the defaults otherwise.
    pub fn into_config(self, inputs: Vec<String>) -> Result<PipelineConfig> {
        let mut config = PipelineConfig::new(inputs, self.warehouse);
        config.catalog = CatalogSettings {
            uri: self.catalog_uri,
            options: self.catalog_options,
            patience: duration_flag(&self.catalog_timeout, SECOND, "catalog-timeout")?,
        };
        config.catalog.kind(&config.warehouse)?;
        config.checkpoints = self.checkpoint_location;
        config.database = identifier(self.iceberg_database, "iceberg-database")?;
        config.table = identifier(self.iceberg_table, "iceberg-table")?;
        config.open_sessions_table = match self.open_sessions_table {
            None => Some(format!("{}_open", config.table)),
            Some(name) if name.is_empty() => None,
            Some(name) => Some(identifier(name, "open-sessions-table")?),
        };
        Ok(config)
    }
}

/// `sessionize inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// How many of the newest snapshots to list.
    #[arg(long, default_value_t = 10)]
    pub commits: usize,
    /// One JSON object on standard output, for scripts.
    #[arg(long)]
    pub json: bool,
    #[command(flatten, next_help_heading = "Tables & catalog")]
    pub tables: TablesArgs,
    /// Also show each partition's log end offset and lag, from these Kafka servers.
    #[command(flatten, next_help_heading = "Kafka lag")]
    pub kafka: KafkaArgs,
    /// The topic whose lag to show (with --kafka-servers).
    #[arg(long, default_value = DEFAULT_TOPIC)]
    pub kafka_topic: String,
}

/// `sessionize maintain`.
#[derive(Args)]
pub struct MaintainArgs {
    /// Snapshots of ours each table keeps; older ones are expired, and the files no retained
    /// snapshot references deleted. 0 keeps every snapshot.
    #[arg(long, default_value_t = 100)]
    pub retain_snapshots: usize,
    /// Input bytes one compaction round rewrites at most, which bounds its memory.
    #[arg(long, default_value_t = 256 << 20)]
    pub compact_max_bytes: u64,
    /// Unreferenced data files of sessionize runs older than this are removed (bare: hours).
    /// Younger ones may belong to a running pipeline's epoch in flight.
    #[arg(long, default_value = "72")]
    pub orphan_age: String,
    /// One JSON object on standard output, for scripts.
    #[arg(long)]
    pub json: bool,
    #[command(flatten, next_help_heading = "Tables & catalog")]
    pub tables: TablesArgs,
}

/// `sessionize report`.
#[derive(Args)]
pub struct ReportArgs {
    /// The HTML file to write.
    #[arg(long, default_value = "sessions.html")]
    pub out: PathBuf,
    #[command(flatten, next_help_heading = "Tables & catalog")]
    pub tables: TablesArgs,
}
