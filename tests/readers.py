"""Reads the sessions table, on S3, through its Iceberg catalog with the readers users have, for
tests/readers.rs: Spark (PySpark with Iceberg's iceberg-spark-runtime jar), DuckDB (with its
iceberg extension, loaded from the duckdb-extension-* wheels) and pyiceberg.

Usage: python3 tests/readers.py CATALOG_URI S3_ENDPOINT OUT.json

CATALOG_URI is a REST catalog (http://…), a SQL catalog on PostgreSQL (postgres://USER@HOST:
PORT/DB, whose catalog is named "default", as sessionize names it), or `glue`: AWS Glue as moto's
server serves it at S3_ENDPOINT; the tables' files are in moto's S3 at S3_ENDPOINT (keys
test/test, path-style).

Each reader computes, by its own means, the numbers of a table validation: the row count, the
number of users, the sessions of each user, and Spark's `describe` of session_duration_seconds
(count, min, max, mean, sample standard deviation). OUT.json maps each reader to its numbers.
Everything the readers need comes from scripts/services/install.sh (`readers`); when something
is missing, this exits 2 with a line that says so.
"""

import importlib.util
import json
import os
import sys
import tempfile
from urllib.parse import urlparse

NAMESPACE, TABLE = "sessions", "user_sessions"
# The sessions open at the last commit: after a run to the end of its input, none.
OPEN_TABLE = "user_sessions_open"
COLUMN = "session_duration_seconds"
CACHE = os.environ.get("SESSIONIZE_SERVICES_CACHE", "/var/tmp/sessionize-services")
INSTALL = "run scripts/services/install.sh (or scripts/services/install.sh readers)"


def missing(what):
    print(f"readers.py: {what} is missing: {INSTALL}", file=sys.stderr)
    sys.exit(2)


def spark_jars():
    """The iceberg-spark-runtime jar (and anything else install.sh resolved for Spark)."""
    path = os.path.join(CACHE, "readers", "classpath.txt")
    try:
        with open(path) as f:
            jars = [j for j in f.read().strip().split(":") if j]
    except OSError:
        missing(path)
    for jar in jars:
        if not os.path.isfile(jar):
            missing(jar)
    if not any("iceberg-spark-runtime" in os.path.basename(j) for j in jars):
        missing(f"the iceberg-spark-runtime jar in {path}")
    return jars


def duckdb_extension(name):
    """The path of DuckDB extension NAME in its duckdb-extension-NAME wheel, built for this
    DuckDB."""
    import duckdb

    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or spec.origin is None:
        missing(f"the Python package duckdb-extension-{name}")
    path = os.path.join(
        os.path.dirname(spec.origin),
        "extensions",
        f"v{duckdb.__version__}",
        f"{name}.duckdb_extension",
    )
    if not os.path.isfile(path):
        missing(f"{path} (duckdb-extension-{name} for DuckDB {duckdb.__version__})")
    return path


S3_KEY, S3_SECRET, S3_REGION = "test", "test", "us-east-1"


class Catalog:
    """Where the table is: its catalog, and the S3 server its files are on."""

    def __init__(self, uri, endpoint):
        self.uri, self.endpoint = uri, endpoint
        self.rest = uri.startswith("http")
        self.glue = uri == "glue"
        if not self.rest and not self.glue:
            self.postgres = urlparse(uri)

    def s3_properties(self):
        """The Iceberg FileIO properties of the S3 server."""
        return {
            "s3.endpoint": self.endpoint,
            "s3.access-key-id": S3_KEY,
            "s3.secret-access-key": S3_SECRET,
            "s3.region": S3_REGION,
            "s3.path-style-access": "true",
        }


def check_installed():
    for module in ("pyspark", "duckdb", "pyiceberg", "pyarrow", "psycopg2"):
        if importlib.util.find_spec(module) is None:
            missing(f"the Python package {module}")
    jars = spark_jars()
    extensions = [duckdb_extension(name) for name in ("avro", "httpfs", "iceberg")]
    return jars, extensions


def numbers(rows, per_user, count, minimum, maximum, mean, stddev):
    return {
        "rows": int(rows),
        "users": len(per_user),
        "per_user": {str(user): int(n) for user, n in per_user.items()},
        "duration": {
            "count": int(count),
            "min": int(minimum),
            "max": int(maximum),
            "mean": float(mean),
            "stddev": float(stddev),
        },
    }


def spark_session(catalog, jars, scratch, app):
    """A local Spark session that opens the table's catalog as a Spark user does, in UTC; and the
    catalog's name in it. A SQL catalog is Iceberg's JDBC catalog, under the catalog name
    sessionize writes its rows with."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["SPARK_LOCAL_DIRS"] = os.path.join(scratch, "spark-local")
    from pyspark.sql import SparkSession

    name = "lake" if catalog.rest or catalog.glue else "default"
    prefix = f"spark.sql.catalog.{name}"
    if catalog.rest:
        kind = {"type": "rest", "uri": catalog.uri}
    elif catalog.glue:
        # Iceberg's GlueCatalog takes its AWS credentials from the usual chain.
        os.environ.update(
            {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_REGION": S3_REGION}
        )
        kind = {"type": "glue", "glue.endpoint": catalog.endpoint, "warehouse": "s3://lake/glue"}
    else:
        pg = catalog.postgres
        kind = {
            "type": "jdbc",
            "uri": f"jdbc:postgresql://{pg.hostname}:{pg.port}{pg.path}",
            "jdbc.user": pg.username or "postgres",
            "warehouse": "s3://lake/warehouse",
        }
    settings = {"io-impl": "org.apache.iceberg.aws.s3.S3FileIO", "client.region": S3_REGION}
    settings.update(catalog.s3_properties())
    settings.update(kind)
    builder = (
        SparkSession.builder.master("local[1]")
        .appName(app)
        .config("spark.jars", ",".join(jars))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.warehouse.dir", os.path.join(scratch, "spark-warehouse"))
        # Iceberg's SQL (its procedures: CALL catalog.system.…), as Spark users configure it.
        .config(
            "spark.sql.extensions",
            "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        )
        .config(prefix, "org.apache.iceberg.spark.SparkCatalog")
    )
    for key, value in settings.items():
        builder = builder.config(f"{prefix}.{key}", value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark, name


def read_spark(catalog, jars, scratch):
    """The validation as a Spark user writes it: load, count, group by user, describe."""
    spark, name = spark_session(catalog, jars, scratch, "sessionize-readers")
    try:
        df = spark.table(f"`{name}`.{NAMESPACE}.{TABLE}")
        rows = df.count()
        per_user = {r["user_id"]: r["count"] for r in df.groupBy("user_id").count().collect()}
        described = {r["summary"]: r[COLUMN] for r in df.describe(COLUMN).collect()}
        open_rows = spark.table(f"`{name}`.{NAMESPACE}.{OPEN_TABLE}").count()
        version = spark.version
    finally:
        spark.stop()
    result = numbers(
        rows,
        per_user,
        described["count"],
        described["min"],
        described["max"],
        described["mean"],
        described["stddev"],
    )
    result["open_rows"] = open_rows
    return result, version


def duckdb_numbers(con, relation):
    (rows,) = con.sql(f"SELECT count(*) FROM {relation}").fetchone()
    per_user = dict(
        con.sql(f"SELECT user_id, count(*) FROM {relation} GROUP BY user_id").fetchall()
    )
    stats = con.sql(
        f"SELECT count({COLUMN}), min({COLUMN}), max({COLUMN}), avg({COLUMN}), "
        f"stddev_samp({COLUMN}) FROM {relation}"
    ).fetchone()
    return numbers(rows, per_user, *stats)


def read_duckdb(catalog, extensions, metadata_location, open_metadata_location):
    """DuckDB scans the table's metadata file directly and, for a REST catalog, attaches the
    catalog too (it has no way into a SQL catalog, nor into Glue without AWS's own endpoint)."""
    import duckdb

    con = duckdb.connect(
        config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
    )
    for path in extensions:
        con.execute(f"LOAD '{path}'")
    endpoint = urlparse(catalog.endpoint)
    con.execute(
        f"CREATE SECRET lake (TYPE s3, KEY_ID '{S3_KEY}', SECRET '{S3_SECRET}', "
        f"REGION '{S3_REGION}', ENDPOINT '{endpoint.netloc}', URL_STYLE 'path', "
        f"USE_SSL {str(endpoint.scheme == 'https').lower()})"
    )
    attached = None
    if catalog.rest:
        con.execute(
            f"ATTACH '' AS lake (TYPE iceberg, ENDPOINT '{catalog.uri}', "
            "AUTHORIZATION_TYPE 'none')"
        )
        attached = duckdb_numbers(con, f"lake.{NAMESPACE}.{TABLE}")
    scanned = duckdb_numbers(con, f"iceberg_scan('{metadata_location}')")
    (scanned["open_rows"],) = con.sql(
        f"SELECT count(*) FROM iceberg_scan('{open_metadata_location}')"
    ).fetchone()
    con.close()
    return attached, scanned, duckdb.__version__


def open_pyiceberg(catalog):
    """The table's catalog, opened with pyiceberg."""
    if catalog.rest:
        from pyiceberg.catalog.rest import RestCatalog

        opened = RestCatalog("rest", uri=catalog.uri, **catalog.s3_properties())
    elif catalog.glue:
        from pyiceberg.catalog.glue import GlueCatalog

        glue = {
            "glue.endpoint": catalog.endpoint,
            "glue.region": S3_REGION,
            "glue.access-key-id": S3_KEY,
            "glue.secret-access-key": S3_SECRET,
        }
        opened = GlueCatalog("glue", **glue, **catalog.s3_properties())
    else:
        from pyiceberg.catalog.sql import SqlCatalog

        pg = catalog.postgres
        url = f"postgresql+psycopg2://{pg.username or 'postgres'}@{pg.hostname}:{pg.port}{pg.path}"
        opened = SqlCatalog("default", uri=url, **catalog.s3_properties())
    return opened


def read_pyiceberg(catalog):
    import pyarrow.compute as pc
    import pyiceberg

    opened = open_pyiceberg(catalog)
    table = opened.load_table(f"{NAMESPACE}.{TABLE}")
    open_table = opened.load_table(f"{NAMESPACE}.{OPEN_TABLE}")
    arrow = table.scan().to_arrow()
    per_user = {
        r["user_id"]: r["user_id_count"]
        for r in arrow.group_by("user_id").aggregate([("user_id", "count")]).to_pylist()
    }
    duration = arrow.column(COLUMN)
    result = numbers(
        arrow.num_rows,
        per_user,
        pc.count(duration).as_py(),
        pc.min(duration).as_py(),
        pc.max(duration).as_py(),
        pc.mean(duration).as_py(),
        pc.stddev(duration, ddof=1).as_py(),
    )
    result["open_rows"] = open_table.scan().to_arrow().num_rows
    return result, (table.metadata_location, open_table.metadata_location), pyiceberg.__version__


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    catalog, out = Catalog(sys.argv[1], sys.argv[2]), sys.argv[3]
    jars, extensions = check_installed()
    result = {}
    result["pyiceberg"], metadata_locations, pyiceberg_version = read_pyiceberg(catalog)
    attached, result["duckdb_iceberg_scan"], duckdb_version = read_duckdb(
        catalog, extensions, *metadata_locations
    )
    if attached is not None:
        result["duckdb"] = attached
    with tempfile.TemporaryDirectory(prefix="readers-spark-") as scratch:
        result["spark"], spark_version = read_spark(catalog, jars, scratch)
    result["versions"] = {
        "spark": spark_version,
        "iceberg_spark_runtime": [os.path.basename(j) for j in jars],
        "duckdb": duckdb_version,
        "pyiceberg": pyiceberg_version,
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
