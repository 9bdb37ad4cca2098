"""An independent Avro producer for tests/avro.rs: registers its writer schemas with a real schema
registry (Apicurio Registry, scripts/services/registry.sh) through the Confluent-compatible API,
then encodes JSON-line events with fastavro in the Confluent wire format.

    python3 tests/avro_encoder.py DIR PARTITIONS REGISTRY_URL USER:PASSWORD

For each DIR/part-<p>.jsonl it writes DIR/part-<p>.records: every non-blank line as one record,
prefixed by its length (4 bytes, big-endian). A line that parses as an event becomes an Avro
datum; any other line is kept as its raw bytes, as a broken producer would send it. The first
half of a partition's events are written with WRITER_SCHEMA, the rest with its next version, which
adds an optional field: a producer upgraded mid-stream. The subject is set to BACKWARD
compatibility first, so the registry itself checks that the new version may follow the old. It
also registers a schema with a map (for hostile block counts) and prints the ids as one JSON
line: {"v1": ..., "v2": ..., "tagged": ...}.
"""
import base64
import copy
import io
import json
import struct
import sys
import urllib.request

import fastavro

# Not the schema sessionize writes: other field order, an extra field, the timestamp as a union
# of long and string, and the details with a field more.
WRITER_SCHEMA = {
    "type": "record",
    "name": "WebEvent",
    "namespace": "com.example.tracking",
    "fields": [
        {"name": "uuid", "type": "string"},
        {"name": "referrer", "type": ["null", "string"], "default": None},
        {"name": "event_timestamp", "type": ["long", "string"]},
        {"name": "event_id", "type": "string"},
        {"name": "page_name", "type": ["null", "string"], "default": None},
        {"name": "event_details", "default": None, "type": ["null", {
            "type": "record",
            "name": "Details",
            "fields": [
                {"name": "event_type", "type": ["null", "string"], "default": None},
                {"name": "event_name", "type": ["null", "string"], "default": None},
                {"name": "event_value", "type": ["null", "long", "string"], "default": None},
                {"name": "session_hint", "type": ["null", "string"], "default": None},
            ],
        }]},
    ],
}
# The next version: an optional field more, as a producer adds one.
WRITER_SCHEMA_V2 = copy.deepcopy(WRITER_SCHEMA)
WRITER_SCHEMA_V2["fields"].insert(2, {"name": "campaign", "type": ["null", "string"], "default": None})


def text_or_none(value):
    return value if isinstance(value, str) else None


def to_record(line, schema_id, parsed):
    """The event as a record of the parsed schema `parsed` (WRITER_SCHEMA or its next version)
    with its id, or None if it cannot be one."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    uuid, event_id, ts = event.get("uuid"), event.get("event_id"), event.get("event_timestamp")
    page, details = event.get("page_name"), event.get("event_details")
    if not isinstance(uuid, str) or not isinstance(event_id, str):
        return None
    if isinstance(ts, bool) or not isinstance(ts, (int, str)) or (isinstance(ts, int) and not -2**63 <= ts < 2**63):
        return None
    if page is not None and not isinstance(page, str):
        return None
    if details is not None and not isinstance(details, dict):
        return None
    if details is not None:
        value = details.get("event_value")
        details = {
            "event_type": text_or_none(details.get("event_type")),
            "event_name": text_or_none(details.get("event_name")),
            "event_value": value if isinstance(value, (int, str)) and not isinstance(value, bool) else None,
            "session_hint": None,
        }
    record = {"uuid": uuid, "referrer": "https://example.com", "event_timestamp": ts,
              "event_id": event_id, "page_name": page, "event_details": details,
              "campaign": "spring"}
    out = io.BytesIO()
    out.write(b"\0" + struct.pack(">I", schema_id))
    fastavro.schemaless_writer(out, parsed, record)
    return out.getvalue()


TAGGED_SCHEMA = {
    "type": "record",
    "name": "Tagged",
    "fields": [
        {"name": "uuid", "type": "string"},
        {"name": "tags", "type": {"type": "map", "values": "string"}},
    ],
}


def call(url, auth, method, body):
    """One request to the registry's Confluent-compatible API, with basic authentication."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method)
    request.add_header("Content-Type", "application/vnd.schemaregistry.v1+json")
    request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def register(registry, auth, subject, schema):
    return call("%s/subjects/%s/versions" % (registry, subject), auth, "POST",
                {"schema": json.dumps(schema)})["id"]


def main():
    directory, partitions, registry, auth = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    call("%s/config/clickstream-value" % registry, auth, "PUT", {"compatibility": "BACKWARD"})
    ids = {
        "v1": register(registry, auth, "clickstream-value", WRITER_SCHEMA),
        "v2": register(registry, auth, "clickstream-value", WRITER_SCHEMA_V2),
        "tagged": register(registry, auth, "tagged-value", TAGGED_SCHEMA),
    }
    versions = [(ids["v1"], fastavro.parse_schema(WRITER_SCHEMA)),
                (ids["v2"], fastavro.parse_schema(WRITER_SCHEMA_V2))]
    for p in range(partitions):
        with open("%s/part-%d.jsonl" % (directory, p), "rb") as source:
            lines = [l for l in source.read().split(b"\n") if l.strip()]
        with open("%s/part-%d.records" % (directory, p), "wb") as out:
            for i, line in enumerate(lines):
                schema_id, parsed = versions[0 if i < len(lines) // 2 else 1]
                record = to_record(line, schema_id, parsed) or line
                out.write(struct.pack(">I", len(record)) + record)
    print(json.dumps(ids), flush=True)


if __name__ == "__main__":
    main()
