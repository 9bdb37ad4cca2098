#!/usr/bin/env bash
# Installs what scripts/services/{kafka,iceberg_rest,postgres,s3,registry}.sh need, skipping what is
# present:
#   - the PostgreSQL server (Debian package `postgresql`);
#   - moto's S3 server (PyPI `moto[server]`);
#   - the Java classpath of an Apache Kafka 4.x broker (KRaft), resolved with Maven into ~/.m2;
#   - the Java classpath of Apache Iceberg's REST catalog test fixture, resolved likewise;
#   - two small Java helpers from scripts/services/java/ compiled against those classpaths;
#   - Apicurio Registry (`registry`), a Confluent-compatible schema registry: its Quarkus
#     application from Maven Central, unpacked, and the Java 21+ it needs (found under
#     /usr/lib/jvm or JAVA21_HOME; the default Java may be older);
#   - the readers the tests check the tables with (`readers`): PySpark with Iceberg's
#     iceberg-spark-runtime jar (Maven), DuckDB with its iceberg, avro and httpfs extensions
#     (PyPI wheels, so no download from DuckDB's extension server is needed);
#   - a headless browser (`chromium`, the Debian package) for the tests of the pages sessionize
#     serves and writes.
# Generated poms, classpaths and compiled helpers go to $SESSIONIZE_SERVICES_CACHE
# (default /var/tmp/sessionize-services). Needs Java 17+ (javac) and Maven 3.
#
# Usage: scripts/services/install.sh [all|postgres|s3|kafka|iceberg-rest|registry|readers|chromium]...
#        (default: all)
# Env:   KAFKA_VERSION (default 4.4.0, falls back to 4.1.1 if it does not resolve)
#        ICEBERG_VERSION (default 1.11.0, falls back to 1.10.1)
#        APICURIO_VERSION (default 3.3.3)
#        ICEBERG_SPARK_VERSION (default 1.11.0, falls back to 1.10.1): iceberg-spark-runtime-3.5_2.12
#        SERVICES_FORCE=1 re-resolves even when the cache looks complete.
set -euo pipefail
SVC_NAME=install
. "$(dirname "$0")/lib.sh"

START=$SECONDS
mkdir -p "$SVC_CACHE"

want=("$@")
[ ${#want[@]} -eq 0 ] && want=(all)
wants() {
  local w
  for w in "${want[@]}"; do
    [ "$w" = all ] || [ "$w" = "$1" ] && return 0
  done
  return 1
}
for w in "${want[@]}"; do
  case $w in all | postgres | s3 | kafka | iceberg-rest | registry | readers | chromium) ;; *) svc_die "unknown component '$w' (all, postgres, s3, kafka, iceberg-rest, registry, readers, chromium)" ;; esac
done

# ---------------------------------------------------------------- PostgreSQL (Debian package)
pg_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/postgres" ] && [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  return 1
}

install_postgres() {
  if pg_bindir >/dev/null && command -v psql >/dev/null; then
    svc_log "postgres: present ($(pg_bindir))"
    return
  fi
  [ "$(id -u)" = 0 ] || svc_die "postgres: not installed and not root: run apt-get install postgresql as root"
  svc_log "postgres: installing the Debian package postgresql"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql postgresql-client >/dev/null
  pg_bindir >/dev/null || svc_die "postgres: installed, but no /usr/lib/postgresql/*/bin/postgres found"
  svc_log "postgres: installed ($(pg_bindir))"
}

# ---------------------------------------------------------------- S3 (moto's server, PyPI)
install_s3() {
  if command -v moto_server >/dev/null; then
    svc_log "s3: present ($(command -v moto_server))"
    return
  fi
  svc_log "s3: installing moto[server] from PyPI"
  python3 -m pip install --quiet "moto[server]==5.*" >/dev/null 2>&1 ||
    python3 -m pip install --quiet "moto[server]==5.*"
  command -v moto_server >/dev/null || svc_die "s3: moto installed, but moto_server is not on PATH"
}

# ---------------------------------------------------------------- Maven helpers
# maven_classpath NAME POM_TEXT: writes POM_TEXT to $SVC_CACHE/NAME/pom.xml and resolves its
# runtime classpath into $SVC_CACHE/NAME/classpath.txt, unless an identical pom was resolved
# before and every jar of its classpath is still in ~/.m2. Returns non-zero if Maven fails.
maven_classpath() {
  local name=$1 pom=$2 dir="$SVC_CACHE/$1"
  mkdir -p "$dir"
  if [ "${SERVICES_FORCE:-0}" != 1 ] && [ -s "$dir/classpath.txt" ] && [ -f "$dir/pom.xml" ] &&
    [ "$(cat "$dir/pom.xml")" = "$pom" ] && classpath_complete "$dir/classpath.txt"; then
    return 0
  fi
  printf '%s\n' "$pom" >"$dir/pom.xml"
  rm -f "$dir/classpath.txt"
  if ! (cd "$dir" && mvn -B -q -f pom.xml dependency:build-classpath \
    -Dmdep.outputFile="$dir/classpath.txt" -Dmdep.includeScope=runtime >"$dir/maven.log" 2>&1); then
    svc_log "$name: maven failed; last lines of $dir/maven.log:"
    grep -E 'ERROR|Could not' "$dir/maven.log" | head -n 8 | sed 's/^/    /' >&2
    rm -f "$dir/classpath.txt"
    return 1
  fi
  classpath_complete "$dir/classpath.txt"
}

classpath_complete() {
  local jar
  local IFS=:
  for jar in $(cat "$1"); do
    [ -f "$jar" ] || return 1
  done
}

pom_header() {
  cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/services/install.sh: the runtime classpath of $1. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.sessionize.services</groupId>
  <artifactId>$1</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <properties><project.build.sourceEncoding>UTF-8</project.build.sourceEncoding></properties>
  <build><pluginManagement><plugins><plugin>
    <groupId>org.apache.maven.plugins</groupId>
    <artifactId>maven-dependency-plugin</artifactId>
    <version>3.8.1</version>
  </plugin></plugins></pluginManagement></build>
EOF
}

dep() { # dep GROUP ARTIFACT VERSION [CLASSIFIER] [EXCLUSIONS_XML]
  printf '    <dependency><groupId>%s</groupId><artifactId>%s</artifactId><version>%s</version>' "$1" "$2" "$3"
  [ -n "${4:-}" ] && printf '<classifier>%s</classifier>' "$4"
  [ -n "${5:-}" ] && printf '<exclusions>%s</exclusions>' "$5"
  printf '</dependency>\n'
}
excl() { printf '<exclusion><groupId>%s</groupId><artifactId>%s</artifactId></exclusion>' "$1" "${2:-*}"; }

# javac_helper NAME SOURCE...: compiles sources against $SVC_CACHE/NAME/classpath.txt into
# $SVC_CACHE/NAME/helpers, unless the compiled classes are newer than the sources and classpath.
javac_helper() {
  local name=$1 dir="$SVC_CACHE/$1"
  shift
  local out="$dir/helpers" stamp="$dir/helpers/.stamp" src fresh=1
  if [ -f "$stamp" ] && [ "${SERVICES_FORCE:-0}" != 1 ]; then
    for src in "$@" "$dir/classpath.txt"; do [ "$src" -nt "$stamp" ] && fresh=0; done
  else
    fresh=0
  fi
  [ $fresh = 1 ] && return 0
  rm -rf "$out"
  mkdir -p "$out"
  javac -nowarn -d "$out" -cp "$(cat "$dir/classpath.txt")" "$@" 2>"$dir/javac.log" ||
    { cat "$dir/javac.log" >&2; svc_die "$name: compiling $* failed"; }
  touch "$stamp"
}

# ---------------------------------------------------------------- Kafka
kafka_pom() {
  local v=$1 log4j=2.25.5
  pom_header "kafka-$v"
  echo "  <dependencies>"
  dep org.apache.kafka kafka_2.13 "$v"        # kafka.Kafka (broker + KRaft controller), StorageTool
  dep org.apache.kafka kafka-tools "$v"       # org.apache.kafka.tools.* (TopicCommand, ConsoleProducer...)
  dep org.apache.logging.log4j log4j-core $log4j
  dep org.apache.logging.log4j log4j-slf4j-impl $log4j    # Kafka 4.x logs through slf4j 1.7
  echo "  </dependencies>"
  echo "</project>"
}

install_kafka() {
  local v tried=()
  for v in ${KAFKA_VERSION:-4.4.0 4.1.1}; do
    tried+=("$v")
    if maven_classpath kafka "$(kafka_pom "$v")"; then
      echo "$v" >"$SVC_CACHE/kafka/version"
      javac_helper kafka "$SVC_SCRIPTS/java/KafkaReadyProbe.java"
      svc_log "kafka: org.apache.kafka:kafka_2.13:$v ready ($(tr ':' '\n' <"$SVC_CACHE/kafka/classpath.txt" | wc -l) jars)"
      return
    fi
    svc_log "kafka: version $v did not resolve"
  done
  svc_die "kafka: no version resolved (tried ${tried[*]})"
}

# ---------------------------------------------------------------- Iceberg REST fixture
# Maven Central has no iceberg-open-api-test-fixtures-runtime jar (the shaded jar the
# apache/iceberg-rest-fixture image is built from): only iceberg-open-api's "test-fixtures" jar
# with the fixture's classes and no dependencies. The dependencies below are those the fixture is
# built with (open-api's testFixtures configuration in Iceberg's build.gradle), with versions
# from Iceberg's gradle/libs.versions.toml of that release; Hadoop comes as the shaded client,
# and the PostgreSQL JDBC driver is added so the catalog can also live in PostgreSQL.
iceberg_pom() {
  local v=$1 jetty=12.1.8 hadoop=3.4.3 sqlite=3.53.0.0 slf4j=2.0.17
  pom_header "iceberg-rest-$v"
  echo "  <dependencies>"
  dep org.apache.iceberg iceberg-open-api "$v" test-fixtures   # RESTCatalogServer & co.
  dep org.apache.iceberg iceberg-core "$v"
  dep org.apache.iceberg iceberg-core "$v" tests               # RESTCatalogAdapter, RESTCatalogServlet
  dep org.apache.iceberg iceberg-aws "$v"                      # S3FileIO, credentials vending
  dep org.apache.iceberg iceberg-aws-bundle "$v"               # the AWS SDK for iceberg-aws
  dep org.apache.hadoop hadoop-client-api $hadoop              # HadoopFileIO for file:// warehouses
  dep org.apache.hadoop hadoop-client-runtime $hadoop
  dep org.eclipse.jetty.ee10 jetty-ee10-servlet $jetty
  dep org.eclipse.jetty.compression jetty-compression-server $jetty
  dep org.eclipse.jetty.compression jetty-compression-gzip $jetty
  dep org.xerial sqlite-jdbc $sqlite
  dep org.postgresql postgresql 42.7.14                        # for a catalog kept in PostgreSQL
  dep org.slf4j slf4j-api $slf4j
  dep org.slf4j slf4j-simple $slf4j
  echo "  </dependencies>"
  echo "</project>"
}

install_iceberg_rest() {
  local v tried=()
  for v in ${ICEBERG_VERSION:-1.11.0 1.10.1}; do
    tried+=("$v")
    if maven_classpath iceberg-rest "$(iceberg_pom "$v")"; then
      echo "$v" >"$SVC_CACHE/iceberg-rest/version"
      javac_helper iceberg-rest "$SVC_SCRIPTS/java/org/apache/iceberg/rest/LoopbackRESTCatalogServer.java"
      svc_log "iceberg-rest: org.apache.iceberg:iceberg-open-api:$v:test-fixtures ready ($(tr ':' '\n' <"$SVC_CACHE/iceberg-rest/classpath.txt" | wc -l) jars)"
      return
    fi
    svc_log "iceberg-rest: version $v did not resolve"
  done
  svc_die "iceberg-rest: no version resolved (tried ${tried[*]})"
}

# ---------------------------------------------------------------- Apicurio Registry
# Its Quarkus application is one tar.gz on Maven Central (classifier `all`), with no top-level
# directory; it runs on Java 21 or newer, which need not be the default `java`.
java21_home() {
  local home version
  for home in ${JAVA21_HOME:-} $(ls -d /usr/lib/jvm/*/ 2>/dev/null | sort -V -r); do
    home=${home%/}
    [ -x "$home/bin/java" ] || continue
    version=$("$home/bin/java" -XshowSettings:properties -version 2>&1 |
      sed -n 's/^ *java.specification.version = //p')
    [ "${version%%.*}" -ge 21 ] 2>/dev/null && { echo "$home"; return 0; }
  done
  return 1
}

install_registry() {
  local v=${APICURIO_VERSION:-3.3.3} dir="$SVC_CACHE/registry" java_home
  java_home=$(java21_home) ||
    svc_die "registry: Apicurio Registry needs Java 21 or newer: install one (e.g. a Temurin 21+ JDK under /usr/lib/jvm) or set JAVA21_HOME"
  mkdir -p "$dir"
  echo "$java_home" >"$dir/java_home"
  if [ "${SERVICES_FORCE:-0}" != 1 ] && [ -f "$dir/apicurio-$v/quarkus-run.jar" ]; then
    svc_log "registry: Apicurio Registry $v present (Java: $java_home)"
    return
  fi
  rm -rf "$dir/download" "$dir/apicurio-$v.partial"
  if ! mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
    -Dartifact="io.apicurio:apicurio-registry-app:$v:tar.gz:all" \
    -DoutputDirectory="$dir/download" >"$dir/maven.log" 2>&1; then
    grep -E 'ERROR|Could not' "$dir/maven.log" | head -n 8 | sed 's/^/    /' >&2
    svc_die "registry: io.apicurio:apicurio-registry-app:$v did not resolve (log: $dir/maven.log)"
  fi
  mkdir -p "$dir/apicurio-$v.partial"
  tar xzf "$dir/download/apicurio-registry-app-$v-all.tar.gz" -C "$dir/apicurio-$v.partial"
  rm -rf "$dir/download" "$dir/apicurio-$v"
  mv "$dir/apicurio-$v.partial" "$dir/apicurio-$v"
  echo "$v" >"$dir/version"
  svc_log "registry: io.apicurio:apicurio-registry-app:$v ready (Java: $java_home)"
}

# ---------------------------------------------------------------- Readers (Spark, DuckDB)
# PySpark 3.5 (Scala 2.12) from PyPI with Iceberg's Spark runtime for it from Maven Central (one
# shaded jar, cached in ~/.m2, its path in $SVC_CACHE/readers/classpath.txt), and DuckDB with
# its iceberg extension and the extensions that one loads (avro for manifests, httpfs for the
# REST catalog) from the duckdb-extension-* wheels on PyPI, built for exactly that DuckDB.
READERS_PYSPARK=3.5.8
READERS_DUCKDB=1.5.5
READERS_POSTGRES_JDBC=42.7.8

readers_pom() {
  pom_header "readers-$1"
  echo "  <dependencies>"
  dep org.apache.iceberg iceberg-spark-runtime-3.5_2.12 "$1"
  # S3FileIO for tables on S3, and the JDBC driver of a SQL catalog on PostgreSQL.
  dep org.apache.iceberg iceberg-aws-bundle "$1"
  dep org.postgresql postgresql "$READERS_POSTGRES_JDBC"
  echo "  </dependencies>"
  echo "</project>"
}

install_readers() {
  if python3 -c "import sys, psycopg2, pyspark, duckdb, duckdb_extension_iceberg, duckdb_extension_avro, duckdb_extension_httpfs
sys.exit(pyspark.__version__ != '$READERS_PYSPARK' or duckdb.__version__ != '$READERS_DUCKDB')" 2>/dev/null; then
    svc_log "readers: pyspark $READERS_PYSPARK and duckdb $READERS_DUCKDB present"
  else
    svc_log "readers: installing pyspark $READERS_PYSPARK and duckdb $READERS_DUCKDB with its extensions from PyPI"
    local pkgs=("pyspark==$READERS_PYSPARK" "duckdb==$READERS_DUCKDB" "psycopg2-binary==2.9.*")
    local e
    for e in iceberg avro httpfs; do pkgs+=("duckdb-extension-$e==$READERS_DUCKDB"); done
    python3 -m pip install --quiet "${pkgs[@]}" >/dev/null 2>&1 || python3 -m pip install --quiet "${pkgs[@]}"
  fi
  local v tried=()
  for v in ${ICEBERG_SPARK_VERSION:-1.11.0 1.10.1}; do
    tried+=("$v")
    if maven_classpath readers "$(readers_pom "$v")"; then
      printf 'pyspark=%s\nduckdb=%s\niceberg-spark-runtime=%s\n' "$READERS_PYSPARK" "$READERS_DUCKDB" "$v" \
        >"$SVC_CACHE/readers/versions"
      svc_log "readers: org.apache.iceberg:iceberg-spark-runtime-3.5_2.12:$v ready"
      return
    fi
    svc_log "readers: iceberg-spark-runtime $v did not resolve"
  done
  svc_die "readers: no iceberg-spark-runtime version resolved (tried ${tried[*]})"
}

# ---------------------------------------------------------------- chromium (Debian package)
install_chromium() {
  if command -v chromium >/dev/null; then
    svc_log "chromium: present ($(command -v chromium))"
    return
  fi
  [ "$(id -u)" = 0 ] || svc_die "chromium: not installed and not root: run apt-get install chromium as root"
  svc_log "chromium: installing the Debian package chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
  command -v chromium >/dev/null || svc_die "chromium: installed, but not on PATH"
}

# ---------------------------------------------------------------- main
if wants kafka || wants iceberg-rest || wants registry || wants readers; then
  command -v java >/dev/null || svc_die "java not found (Java 17+ needed)"
  command -v javac >/dev/null || svc_die "javac not found (a JDK 17+ is needed, not just a JRE)"
  command -v mvn >/dev/null || svc_die "mvn not found (Maven 3 is needed)"
fi
wants postgres && install_postgres
wants s3 && install_s3
wants kafka && install_kafka
wants iceberg-rest && install_iceberg_rest
wants registry && install_registry
wants readers && install_readers
wants chromium && install_chromium
svc_log "done in $((SECONDS - START))s (cache: $SVC_CACHE)"
