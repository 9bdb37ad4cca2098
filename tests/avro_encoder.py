"""An independent Avro producer for tests/avro.rs: encodes JSON-line events with fastavro in the
Confluent wire format, then answers schema-id lookups as a schema registry would.

    python3 tests/avro_fixture.py DIR PARTITIONS

For each DIR/part-<p>.jsonl it writes DIR/part-<p>.records: every non-blank line as one record,
prefixed by its length (4 bytes, big-endian). A line that parses as an event becomes an Avro
datum of WRITER_SCHEMA (id 7); any other line is kept as its raw bytes, as a broken producer would
send it. Then it serves GET /schemas/ids/<id> on 127.0.0.1 and prints the port. It also knows a
schema with a map (id 8), for hostile block counts, and forbids reading ids from 1000 on, as a
registry with per-subject permissions does.
"""
import http.server
import io
import json
import struct
import sys

import fastavro

SCHEMA_ID = 7
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
PARSED = fastavro.parse_schema(WRITER_SCHEMA)


def text_or_none(value):
    return value if isinstance(value, str) else None


def to_record(line):
    """The event as a datum of WRITER_SCHEMA, or None if it cannot be one."""
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
              "event_id": event_id, "page_name": page, "event_details": details}
    out = io.BytesIO()
    out.write(b"\0" + struct.pack(">I", SCHEMA_ID))
    fastavro.schemaless_writer(out, PARSED, record)
    return out.getvalue()


TAGGED_SCHEMA = {
    "type": "record",
    "name": "Tagged",
    "fields": [
        {"name": "uuid", "type": "string"},
        {"name": "tags", "type": {"type": "map", "values": "string"}},
    ],
}
FORBIDDEN_FROM = 1000

# Schemas by id: the fixture's own, and those registered through POST.
SCHEMAS = {SCHEMA_ID: json.dumps(WRITER_SCHEMA), 8: json.dumps(TAGGED_SCHEMA)}


class Registry(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        prefix = "/schemas/ids/"
        if self.path == "/subjects":
            return self.answer(200, [])
        wanted = int(self.path[len(prefix):]) if self.path.startswith(prefix) else None
        if wanted is not None and wanted >= FORBIDDEN_FROM:
            return self.answer(403, {"error_code": 40301, "message": "User is denied operation Read"})
        found = wanted is not None and SCHEMAS.get(wanted)
        if found:
            self.answer(200, {"schema": found})
        else:
            self.answer(404, {"error_code": 40403, "message": "Schema not found"})

    def do_POST(self):
        if not (self.path.startswith("/subjects/") and self.path.endswith("/versions")):
            return self.answer(404, {"error_code": 404, "message": "Not found"})
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        fastavro.parse_schema(json.loads(body["schema"]))  # refuse what is not Avro
        for known_id, known in SCHEMAS.items():
            if known == body["schema"]:
                return self.answer(200, {"id": known_id})
        SCHEMAS[max(SCHEMAS) + 1] = body["schema"]
        self.answer(200, {"id": max(SCHEMAS)})

    def answer(self, status, body):
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def main():
    directory, partitions = sys.argv[1], int(sys.argv[2])
    for p in range(partitions):
        with open("%s/part-%d.jsonl" % (directory, p), "rb") as source:
            lines = [l for l in source.read().split(b"\n") if l.strip()]
        with open("%s/part-%d.records" % (directory, p), "wb") as out:
            for line in lines:
                record = to_record(line) or line
                out.write(struct.pack(">I", len(record)) + record)
    server = http.server.HTTPServer(("127.0.0.1", 0), Registry)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
