#!/usr/bin/env python3
"""Independent checker for the Iceberg tables written by the sessionizer.

This is a reference implementation of the sessionization rules, written from
the specification below and sharing no code with the Rust engine.  It reads
the same JSONL input files the engine read, computes the exact expected
content of the three output tables, reads the tables back with pyiceberg and
compares them row for row.

Usage::

    python3 scripts/check_tables.py --warehouse DIR --input a.jsonl \
        [--input b.jsonl ...] [--database sessions] [--table user_sessions] \
        [--inactivity-ms 1800000] [--max-duration-ms 7200000] \
        [--allowed-lateness-ms 600000] [--max-future-skew-ms 86400000] \
        [--max-event-bytes 1048576] [--now-ms MS] [--summary-json]

    python3 scripts/check_tables.py --self-test

On success it prints one line of JSON (``{"ok": true, "sessions": N,
"quarantined": N, "late": N, ..., "epoch": "..."}``) and exits 0.  On a
mismatch (including a missing table or a missing ``sessionize.epoch``
snapshot property) it prints a readable diff, the first few differences of
each kind, to stderr and exits 1; with ``--summary-json`` the JSON line
(with ``"ok": false``) is printed to stdout as well.  Exit status 2 means
the check could not run (bad arguments, unreadable input, no catalog.db).
``--self-test`` checks the rule logic (and a pyiceberg round trip) on small
hand-made inputs.

The rules
=========

Input lines
    Each ``--input`` file is one partition, numbered from 0 in command-line
    order.  Lines are split on ``b"\\n"``; one trailing ``b"\\r"`` is
    stripped; a last line without a newline counts.  Lines that are empty or
    consist only of ASCII whitespace (space, tab, LF, FF, CR) are skipped.
    Line numbers are 1-based, ``offset`` is the 0-based byte offset of the
    line's first byte.

Malformed lines (quarantine table)
    A line is quarantined if it is longer than ``max_event_bytes`` (after
    stripping the line ending), is not UTF-8, is not a JSON object, lacks a
    non-empty string ``uuid`` or ``event_id``, has an ``event_timestamp``
    that is neither a JSON integer >= 0 nor a string of ASCII digits, has a
    timestamp later than ``now + max_future_skew``, has a ``page_name`` that
    is neither a string nor null, or an ``event_details`` that is neither an
    object nor null.  Unknown fields are ignored.

Late events (late-events table)
    Per partition, in file order, over valid lines: the watermark before a
    line is ``max_seen - allowed_lateness`` where ``max_seen`` is the largest
    timestamp of the partition's earlier valid events (no watermark before
    the first one).  An event with timestamp < watermark is late; a late
    event at most ``correction_horizon`` behind the watermark corrects its
    sessions (it counts as on time below, without moving ``max_seen``), and
    only a later one goes to the late-events table.

Sessions (sessions table)
    All on-time events of all partitions, grouped by ``uuid`` and sorted by
    ``(event_timestamp, event_id)``.  An event whose ``event_id`` the user
    already had in an applied event at most ``allowed_lateness`` earlier is a
    duplicate and dropped.  An event starts a new session when there is no
    open one, when it is more than ``inactivity`` after the previous event,
    or more than ``max_duration`` after the session's first event (equal to
    a limit stays in).  A session closed by a later event ends with
    ``inactivity`` or ``max_duration`` (whichever rule split it, inactivity
    first); a user's last session ends with ``end_of_input`` if
    ``last + inactivity >= M`` else ``inactivity``, where ``M`` is the
    largest timestamp of all on-time events (duplicates included).
    ``session_id = uuid5(6f1f2d2e-..., user_id + "\\x1f" + start_ms)``;
    ``pages_visited`` holds the first 64 distinct non-null page names in
    order of first visit.

Choices where the rules leave room (the engine should agree):

* whitespace-only lines are skipped before the length rule is applied;
* JSON is strict RFC 8259: ``NaN``/``Infinity`` and unpaired ``\\uD800``
  escapes are malformed; a repeated key keeps its last value (Python's
  behaviour); an ``event_timestamp`` written ``-0`` counts as negative;
* of identical ``(user, ts, event_id)`` events with different page names,
  the first in input order (partition, then offset) is kept; the summary
  reports ``ambiguous_duplicates`` when that choice mattered;
* a null ``pages_visited`` in the table is taken as an empty list;
* "now" for the future-skew rule is the checker's clock unless
  ``--now-ms`` is given, so events within the skew boundary of the run
  time can be classified differently than by the engine.

Only the standard library, pyarrow and pyiceberg are used; the latter two
are imported lazily so that the rule logic works without them.
"""

import argparse
import collections
import hashlib
import itertools
import json
import operator
import os
import sys
import tempfile
import time
import uuid

SESSION_ID_NAMESPACE = uuid.UUID("6f1f2d2e-9a3b-5c1e-8e4f-5e551021ab1e")
MAX_PAGES_PER_SESSION = 64

# ASCII whitespace as the WHATWG/Rust definition has it (no vertical tab).
ASCII_WHITESPACE = b" \t\n\r\x0c"

# The session columns compared, in the order used for row tuples.
# ``session_start`` is the timestamptz column, compared as epoch-ms.
SESSION_COLUMNS = (
    "user_id",
    "session_id",
    "session_start_time_ms",
    "session_end_time_ms",
    "session_duration_seconds",
    "event_count",
    "pages_visited",
    "end_reason",
    "session_start",
)
QUARANTINE_COLUMNS = ("raw", "partition", "offset", "line_number")
LATE_COLUMNS = (
    "user_id",
    "event_id",
    "event_time_ms",
    "watermark_ms",
    "partition",
    "offset",
    "line_number",
)

# How many differences of each kind are shown.
MAX_SHOWN = 10

EPOCH_PROPERTY = "sessionize.epoch"


class Config:
    """The limits the engine ran with."""

    def __init__(self, inactivity_ms=1_800_000, max_duration_ms=7_200_000,
                 allowed_lateness_ms=600_000, max_future_skew_ms=86_400_000,
                 max_event_bytes=1_048_576, now_ms=None, kafka_records=False,
                 correction_horizon_ms=86_400_000):
        self.inactivity_ms = inactivity_ms
        self.max_duration_ms = max_duration_ms
        self.allowed_lateness_ms = allowed_lateness_ms
        self.correction_horizon_ms = correction_horizon_ms
        self.max_future_skew_ms = max_future_skew_ms
        self.max_event_bytes = max_event_bytes
        self.now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        # Inputs are Kafka partitions dumped one record per line: a side
        # row's offset is the record's offset and its line number is 0.
        self.kafka_records = kafka_records


# ---------------------------------------------------------------------------
# Parsing one line
# ---------------------------------------------------------------------------

def _reject_constant(name):
    # Python accepts NaN / Infinity / -Infinity; JSON does not.
    raise ValueError("invalid JSON literal " + name)


class _NegativeZero(int):
    """The JSON literal ``-0``: numerically zero, but a negative number."""


def _int_keeping_negative_zero(text):
    value = int(text)
    return _NegativeZero(0) if value == 0 and text[0] == "-" else value


# One decoder for the fast path (building one per line is slow), and one
# that tells ``-0`` from ``0``, used only when a timestamp parsed as 0.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ZERO_AWARE_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_int=_int_keeping_negative_zero)


def _has_lone_surrogate(value):
    """True if any string (or key) in a parsed JSON value is not UTF-8-able.

    Python's json module lets ``"\\ud800"`` through; JSON text with an
    unpaired surrogate escape does not denote a Unicode string.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _is_ascii_digits(text):
    return text.isascii() and text.isdigit()


def parse_event(line, config):
    """Validate one input line (bytes, without its line ending).

    Returns ``(event, None)`` with ``event = (user_id, event_id, ts_ms,
    page_name_or_None)`` for a valid event, or ``(None, reason)`` for a
    malformed line.
    """
    if len(line) > config.max_event_bytes:
        return None, "longer than %d bytes" % config.max_event_bytes
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not valid UTF-8"
    try:
        obj = _DECODER.decode(text)
    except (ValueError, RecursionError) as err:
        return None, "not valid JSON: %s" % err
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    if "\\u" in text and _has_lone_surrogate(obj):
        return None, "not valid JSON: unpaired surrogate escape"

    user_id = obj.get("uuid")
    if type(user_id) is not str or not user_id:
        return None, "uuid missing, not a string or empty"
    event_id = obj.get("event_id")
    if type(event_id) is not str or not event_id:
        return None, "event_id missing, not a string or empty"

    raw_ts = obj.get("event_timestamp")
    if raw_ts == 0 and type(raw_ts) is int and "-" in text:
        # Was it written as -0 (a negative number)?  Decode again to see.
        raw_ts = _ZERO_AWARE_DECODER.decode(text).get("event_timestamp")
    if type(raw_ts) is int:          # excludes bool and _NegativeZero
        if raw_ts < 0:
            return None, "event_timestamp is negative"
        ts = raw_ts
    elif type(raw_ts) is str and _is_ascii_digits(raw_ts):
        try:
            ts = int(raw_ts)
        except ValueError:           # absurdly long digit string
            return None, "event_timestamp out of range"
    else:
        return None, "event_timestamp missing or not a non-negative integer"
    if ts > config.now_ms + config.max_future_skew_ms:
        return None, "event_timestamp too far in the future"

    page = obj.get("page_name")
    if page is not None and type(page) is not str:
        return None, "page_name is not a string or null"
    details = obj.get("event_details")
    if details is not None and not isinstance(details, dict):
        return None, "event_details is not an object or null"
    return (user_id, event_id, ts, page), None


def iter_lines(stream):
    """Yield ``(line_number, offset, line)`` for the non-blank lines of a
    binary stream; ``line`` has its ``\\n`` and one trailing ``\\r`` removed.
    """
    offset = 0
    line_number = 0
    for chunk in stream:             # binary iteration splits on b"\n" only
        line_number += 1
        start = offset
        offset += len(chunk)
        line = chunk[:-1] if chunk.endswith(b"\n") else chunk
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip(ASCII_WHITESPACE):
            continue
        yield line_number, start, line


def iter_records(stream):
    """Yield ``(0, offset, record)`` for a Kafka partition dumped one record
    per line (blank lines are not records)."""
    offset = 0
    for _line_number, _start, line in iter_lines(stream):
        yield 0, offset, line
        offset += 1


# ---------------------------------------------------------------------------
# Expected output
# ---------------------------------------------------------------------------

class Expected:
    """The expected content of the three tables, plus some counters."""

    def __init__(self):
        self.sessions = []                        # tuples, SESSION_COLUMNS
        self.quarantine = collections.Counter()   # QUARANTINE_COLUMNS
        self.late = collections.Counter()         # LATE_COLUMNS
        self.stats = collections.Counter()
        self.max_event_time_ms = None


def scan_partition(path, partition, config, expected, events_by_user):
    """Classify the lines of one input file.

    On-time events are appended, in input order, to
    ``events_by_user[user_id]`` as ``(ts, event_id, page_name)``.
    """
    pages = {}                       # page names repeat a lot: share them
    max_seen = None
    lateness = config.allowed_lateness_ms
    lines = on_time = 0
    with open(path, "rb") as stream:
        records = (iter_records(stream) if config.kafka_records
                   else iter_lines(stream))
        for line_number, offset, line in records:
            lines += 1
            event, _reason = parse_event(line, config)
            if event is None:
                expected.quarantine[(line, partition, offset,
                                     line_number)] += 1
                continue
            user_id, event_id, ts, page = event
            late = max_seen is not None and ts < max_seen - lateness
            if late and (config.correction_horizon_ms == 0 or ts
                         + config.correction_horizon_ms < max_seen - lateness):
                expected.late[(user_id, event_id, ts, max_seen - lateness,
                               partition, offset, line_number)] += 1
                continue
            if not late and (max_seen is None or ts > max_seen):
                max_seen = ts
            if page is not None:
                page = pages.setdefault(page, page)
            bucket = events_by_user.get(user_id)
            if bucket is None:
                bucket = events_by_user[user_id] = []
            bucket.append((ts, event_id, page))
            on_time += 1
    expected.stats["lines"] += lines
    expected.stats["on_time_events"] += on_time
    # Late events never raise max_seen, so it is the partition's largest
    # on-time timestamp.
    if max_seen is not None and (expected.max_event_time_ms is None
                                 or max_seen > expected.max_event_time_ms):
        expected.max_event_time_ms = max_seen


_TIME_AND_ID = operator.itemgetter(0, 1)
_NAMESPACE_BYTES = SESSION_ID_NAMESPACE.bytes


def session_id(user_id, start_ms):
    """The session id: the name-based (SHA-1, version 5) UUID of
    ``user_id + "\\x1f" + decimal start_ms`` in SESSION_ID_NAMESPACE.

    This is ``uuid.uuid5`` (RFC 4122, section 4.3) spelled out, because it
    runs once per session and the uuid module's version is several times
    slower; the self-test checks that both agree.
    """
    name = ("%s\x1f%d" % (user_id, start_ms)).encode("utf-8")
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50        # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80        # RFC 4122 variant
    h = digest.hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def _session_row(user_id, start, end, count, pages, end_reason):
    return (user_id, session_id(user_id, start), start, end,
            (end - start) // 1000, count, tuple(pages), end_reason, start)


def sessionize_user(user_id, events, config, max_ts, stats):
    """Cut one user's on-time events into session rows (tuples).

    ``events`` are ``(ts, event_id, page_name)`` tuples in input order; the
    list is sorted in place by ``(ts, event_id)``.  Python compares str by
    code point, which is the same order as comparing the UTF-8 bytes.  The
    sort is stable, so of identical ``(ts, event_id)`` pairs the first in
    input order (partition, then offset) is the one kept.
    """
    events.sort(key=_TIME_AND_ID)
    inactivity = config.inactivity_ms
    max_duration = config.max_duration_ms
    lateness = config.allowed_lateness_ms
    applied = {}                     # event_id -> ts of its last applied use
    rows = []
    start = last = last_page = None
    count = 0
    pages = []
    seen_pages = set()
    for ts, event_id, page in events:
        earlier = applied.get(event_id)
        if earlier is not None and earlier >= ts - lateness:
            stats["duplicates"] += 1
            # Sorting puts an exact duplicate right after the event it
            # repeats; if the page differs, which one is kept is a choice.
            if earlier == ts and page != last_page:
                stats["ambiguous_duplicates"] += 1
            continue
        applied[event_id] = ts
        last_page = page
        if start is not None:
            if ts - last > inactivity:
                rows.append(_session_row(user_id, start, last, count, pages,
                                         "inactivity"))
                start = None
            elif ts - start > max_duration:
                rows.append(_session_row(user_id, start, last, count, pages,
                                         "max_duration"))
                start = None
        if start is None:
            start, count, pages, seen_pages = ts, 0, [], set()
        last = ts
        count += 1
        if (page is not None and page not in seen_pages
                and len(pages) < MAX_PAGES_PER_SESSION):
            seen_pages.add(page)
            pages.append(page)
    if start is not None:
        reason = ("end_of_input" if last + inactivity >= max_ts
                  else "inactivity")
        rows.append(_session_row(user_id, start, last, count, pages, reason))
    return rows


def compute_expected(paths, config):
    """Read the input files and compute the expected table contents."""
    expected = Expected()
    events_by_user = {}
    for partition, path in enumerate(paths):
        scan_partition(path, partition, config, expected, events_by_user)
    max_ts = expected.max_event_time_ms
    for user_id in list(events_by_user):
        events = events_by_user.pop(user_id)   # free memory as we go
        expected.sessions.extend(
            sessionize_user(user_id, events, config, max_ts, expected.stats))
    return expected


# ---------------------------------------------------------------------------
# Reading the tables
# ---------------------------------------------------------------------------

_MS_PER_UNIT = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000),
                "ns": (1, 1_000_000)}


def _timestamp_to_ms(value, unit):
    """Epoch value in ``unit`` -> epoch ms (or a marker if not whole ms)."""
    if value is None:
        return None
    mul, div = _MS_PER_UNIT[unit]
    value *= mul
    if value % div:
        return "%d %s (not a whole millisecond)" % (value, unit)
    return value // div


def _python_values(array, name):
    """An Arrow array -> list of Python values, normalised for comparing.

    Timestamps become epoch milliseconds; lists become tuples (so that rows
    can be dict keys), and a null ``pages_visited`` list becomes ``()`` (an
    empty list may be stored as null: both mean no pages).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(array.type):
        unit = array.type.unit
        mul, div = _MS_PER_UNIT[unit]
        raw = array.cast(pa.int64())
        if array.null_count == 0 and mul == 1 and (
                len(raw) == 0 or pc.all(pc.equal(
                    pc.multiply(pc.divide(raw, div), div), raw)).as_py()):
            return pc.divide(raw, div).to_pylist()   # all whole ms: fast
        return [_timestamp_to_ms(v, unit) for v in raw.to_pylist()]
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        # ListArray.to_pylist() is slow; slice the flat values instead.
        offsets = array.offsets.to_pylist()
        base = offsets[0]
        flat = array.values.slice(base, offsets[-1] - base).to_pylist()
        values = [tuple(flat[offsets[i] - base:offsets[i + 1] - base])
                  for i in range(len(array))]
        if array.null_count:
            none = () if name == "pages_visited" else None
            values = [v if valid else none for v, valid
                      in zip(values, array.is_valid().to_pylist())]
        return values
    return array.to_pylist()


def open_catalog(warehouse):
    from pyiceberg.catalog.sql import SqlCatalog

    warehouse = os.path.abspath(warehouse)
    return SqlCatalog("default", uri="sqlite:///%s/catalog.db" % warehouse,
                      warehouse="file://%s" % warehouse)


class ActualTable:
    """The rows of one Iceberg table.

    They stay in Arrow form and are turned into Python tuples one batch at
    a time: ``to_pylist()`` on a table of millions of rows (one dict each)
    would take several times more memory than the rest of the check.
    """

    BATCH_ROWS = 65536

    def __init__(self, catalog, identifier):
        self.identifier = identifier
        self.table = catalog.load_table(identifier)
        self.arrow = self.table.scan().to_arrow()
        self.names = set(self.arrow.schema.names)

    def tuples(self, names):
        """Iterate over the rows as tuples of the ``names`` columns (None
        for a column the table lacks)."""
        for batch in self.arrow.to_batches(max_chunksize=self.BATCH_ROWS):
            columns = []
            for name in names:
                index = batch.schema.get_field_index(name)
                if index < 0:
                    columns.append(itertools.repeat(None, batch.num_rows))
                else:
                    columns.append(_python_values(batch.column(index), name))
            yield from zip(*columns)


# ---------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------

def _fmt(columns, values):
    return "{" + ", ".join("%s=%r" % (name, value)
                           for name, value in zip(columns, values)) + "}"


def _multiset_diff(name, balance, actual_rows, problems):
    """Compare a Counter of expected tuples with an iterable of actual ones.

    ``balance`` is consumed (it ends up holding expected minus actual).
    Returns ``(missing, extra)``: lists of tuples, with repetitions.
    """
    expected_rows = sum(balance.values())
    found = 0
    for row in actual_rows:
        balance[row] -= 1
        found += 1
    missing, extra = [], []
    for row, n in balance.items():
        if n > 0:
            missing.extend([row] * n)
        elif n < 0:
            extra.extend([row] * -n)
    if missing or extra:
        problems.append(
            "%s: %d missing, %d extra (expected %d rows, found %d)"
            % (name, len(missing), len(extra), expected_rows, found))
    return missing, extra


def _show_rows(label, columns, rows, problems):
    for values in sorted(rows, key=repr)[:MAX_SHOWN]:
        problems.append("  %s %s" % (label, _fmt(columns, values)))
    if len(rows) > MAX_SHOWN:
        problems.append("  ... %d more %s" % (len(rows) - MAX_SHOWN, label))


def _check_columns(name, actual, columns, problems):
    absent = [c for c in columns if c not in actual.names]
    if absent:
        problems.append("%s: missing columns %s" % (name, ", ".join(absent)))


def compare_sessions(expected, actual, problems):
    _check_columns("sessions", actual, SESSION_COLUMNS, problems)
    missing, extra = _multiset_diff(
        "sessions", collections.Counter(expected.sessions),
        actual.tuples(SESSION_COLUMNS), problems)
    # Pair up rows with the same session_id to show field-level changes.
    sid = SESSION_COLUMNS.index("session_id")
    extra_by_id = collections.defaultdict(list)
    for values in extra:
        extra_by_id[values[sid]].append(values)
    changed, only_missing = [], []
    for values in missing:
        if extra_by_id.get(values[sid]):
            changed.append((values, extra_by_id[values[sid]].pop()))
        else:
            only_missing.append(values)
    only_extra = [v for vals in extra_by_id.values() for v in vals]
    for want, got in sorted(changed, key=repr)[:MAX_SHOWN]:
        diffs = ["%s: expected %r, found %r" % (col, a, b)
                 for col, a, b in zip(SESSION_COLUMNS, want, got) if a != b]
        problems.append("  changed session %s (user %r, start %r): %s"
                        % (want[sid], want[0], want[2], "; ".join(diffs)))
    if len(changed) > MAX_SHOWN:
        problems.append("  ... %d more changed" % (len(changed) - MAX_SHOWN))
    _show_rows("missing", SESSION_COLUMNS, only_missing, problems)
    _show_rows("extra", SESSION_COLUMNS, only_extra, problems)

    # Expected session ids are unique, so of the rows sharing an id at most
    # one can match: a repeated id is always among the extra rows' ids.
    suspects = {values[sid] for values in extra}
    ids = collections.Counter(values[0] for values in
                              actual.tuples(("session_id",))
                              if values[0] in suspects)
    repeated = [(k, n) for k, n in ids.items() if n > 1]
    if repeated:
        problems.append("sessions: %d session_id values occur more than once"
                        % len(repeated))
        for key, n in sorted(repeated, key=repr)[:MAX_SHOWN]:
            problems.append("  session_id %r occurs %d times" % (key, n))


def compare_quarantine(expected, actual, problems):
    _check_columns("quarantine", actual, QUARANTINE_COLUMNS + ("reason",),
                   problems)
    missing, extra = _multiset_diff("quarantine",
                                    collections.Counter(expected.quarantine),
                                    actual.tuples(QUARANTINE_COLUMNS),
                                    problems)
    _show_rows("missing", QUARANTINE_COLUMNS, missing, problems)
    _show_rows("extra", QUARANTINE_COLUMNS, extra, problems)
    blank = [row[:-1] for row in
             actual.tuples(QUARANTINE_COLUMNS + ("reason",)) if not row[-1]]
    if blank:
        problems.append("quarantine: %d rows have an empty reason"
                        % len(blank))
        _show_rows("empty reason", QUARANTINE_COLUMNS, blank, problems)


def compare_late(expected, actual, problems):
    _check_columns("late events", actual, LATE_COLUMNS, problems)
    missing, extra = _multiset_diff("late events",
                                    collections.Counter(expected.late),
                                    actual.tuples(LATE_COLUMNS), problems)
    _show_rows("missing", LATE_COLUMNS, missing, problems)
    _show_rows("extra", LATE_COLUMNS, extra, problems)


def _load(catalog, identifier, problems):
    """An ActualTable, or None (and a problem) if the table does not exist."""
    from pyiceberg.exceptions import NoSuchTableError

    try:
        return ActualTable(catalog, identifier)
    except NoSuchTableError:
        problems.append("table %s does not exist" % identifier)
        return None


def check_warehouse(args, config):
    """Run the whole check; returns ``(problems, summary)``."""
    catalog_db = os.path.join(args.warehouse, "catalog.db")
    if not os.path.isfile(catalog_db):
        # Opening the catalog would silently create an empty one.
        raise FileNotFoundError("no catalog at %s" % catalog_db)
    expected = compute_expected(args.input, config)
    catalog = open_catalog(args.warehouse)
    base = "%s.%s" % (args.database, args.table)
    problems = []

    epoch = None
    sessions = _load(catalog, base, problems)
    if sessions is not None:
        compare_sessions(expected, sessions, problems)
        table = sessions.table
        del sessions                 # free the rows before the next table
        snapshot = table.current_snapshot()
        if snapshot is None:
            problems.append("sessions: the table has no snapshot")
        else:
            # The newest commit of ours: compactions (`replace` snapshots) may be on top of it.
            newest = snapshot
            while newest is not None and (newest.summary or {}).get(EPOCH_PROPERTY) is None:
                parent = newest.parent_snapshot_id
                newest = None if parent is None else table.snapshot_by_id(parent)
            if newest is None:
                problems.append("sessions: no snapshot from the newest (%d) back has a %r "
                                "summary property"
                                % (snapshot.snapshot_id, EPOCH_PROPERTY))
            else:
                epoch = newest.summary.get(EPOCH_PROPERTY)

    quarantine = _load(catalog, base + "_quarantine", problems)
    if quarantine is not None:
        compare_quarantine(expected, quarantine, problems)
        del quarantine
    late = _load(catalog, base + "_late_events", problems)
    if late is not None:
        compare_late(expected, late, problems)
        del late

    stats = expected.stats
    summary = {
        "ok": not problems,
        "sessions": len(expected.sessions),
        "quarantined": sum(expected.quarantine.values()),
        "late": sum(expected.late.values()),
        "partitions": len(args.input),
        "lines": stats["lines"],
        "on_time_events": stats["on_time_events"],
        "duplicates": stats["duplicates"],
        "max_event_time_ms": expected.max_event_time_ms,
        "epoch": epoch,
    }
    if stats["ambiguous_duplicates"]:
        # Identical (user, ts, event_id) with different page names: which one
        # is kept is not specified; the first in input order is assumed.
        summary["ambiguous_duplicates"] = stats["ambiguous_duplicates"]
    return problems, summary


# ---------------------------------------------------------------------------
# Self-test
# ---------------------------------------------------------------------------

MIN = 60_000
HOUR = 60 * MIN


class _SelfTest:
    """Tiny assertion collector for ``--self-test``."""

    def __init__(self):
        self.failures = []
        self.count = 0
        self.tmp = tempfile.mkdtemp(prefix="check_tables_selftest_")

    def check(self, name, got, want):
        self.count += 1
        if got != want:
            self.failures.append("%s:\n    expected %r\n    got      %r"
                                 % (name, want, got))

    def write(self, name, lines, raw=None):
        """Write JSONL (dicts are dumped, str/bytes written as-is)."""
        path = os.path.join(self.tmp, name)
        if raw is None:
            parts = []
            for line in lines:
                if isinstance(line, dict):
                    line = json.dumps(line)
                if isinstance(line, str):
                    line = line.encode("utf-8")
                parts.append(line + b"\n")
            raw = b"".join(parts)
        with open(path, "wb") as out:
            out.write(raw)
        return path


def _ev(user, event_id, ts, page=None):
    event = {"uuid": user, "event_id": event_id, "event_timestamp": ts}
    if page is not None:
        event["page_name"] = page
    return event


def _sessions_of(expected, user):
    """(start, end, count, end_reason) of one user's expected sessions."""
    return sorted((r[2], r[3], r[5], r[7]) for r in expected.sessions
                  if r[0] == user)


def _selftest_boundaries(t):
    cfg = Config(now_ms=10**13)
    # One partition per user, so that nothing here is late.
    paths = [
        # a: gap of exactly 30 min stays in, 30 min + 1 ms splits.
        t.write("gaps_a.jsonl", [_ev("a", "a1", 0), _ev("a", "a2", 30 * MIN),
                                 _ev("a", "a3", 60 * MIN + 1)]),
        # b: events every 20 min; the 2 h limit splits at 140 min, and the
        # next split is measured from the new start (140 + 120 = 260).
        t.write("gaps_b.jsonl",
                [_ev("b", "b%02d" % i, i * 20 * MIN) for i in range(15)]),
        # c: a last session exactly `inactivity` before M ends with
        # end_of_input, one 1 ms earlier (d) ends with inactivity.
        t.write("gaps_c.jsonl", [_ev("c", "c1", 280 * MIN - 30 * MIN)]),
        t.write("gaps_d.jsonl", [_ev("d", "d1", 280 * MIN - 30 * MIN - 1)]),
    ]
    exp = compute_expected(paths, cfg)
    t.check("max event time", exp.max_event_time_ms, 280 * MIN)
    t.check("inactivity boundary", _sessions_of(exp, "a"), [
        (0, 30 * MIN, 2, "inactivity"),
        (60 * MIN + 1, 60 * MIN + 1, 1, "inactivity"),
    ])
    t.check("max duration split", _sessions_of(exp, "b"), [
        (0, 120 * MIN, 7, "max_duration"),
        (140 * MIN, 260 * MIN, 7, "max_duration"),
        (280 * MIN, 280 * MIN, 1, "end_of_input"),
    ])
    t.check("end_of_input boundary", _sessions_of(exp, "c"),
            [(250 * MIN, 250 * MIN, 1, "end_of_input")])
    t.check("inactivity at end", _sessions_of(exp, "d"),
            [(250 * MIN - 1, 250 * MIN - 1, 1, "inactivity")])
    row = [r for r in exp.sessions if r[0] == "b"][0]
    t.check("duration seconds", row[4], 7200)
    for user, start in (("b", 0), ("", 1), ("\u00e9\U0001F600", 10**13)):
        t.check("session id %r %r" % (user, start), session_id(user, start),
                str(uuid.uuid5(SESSION_ID_NAMESPACE,
                               "%s\x1f%d" % (user, start))))
    t.check("session id column", row[1], session_id("b", 0))
    # Inactivity wins over max duration when both apply.
    path = t.write("both.jsonl", [_ev("e", "e1", 0),
                                  _ev("e", "e2", 3 * HOUR)])
    exp = compute_expected([path], cfg)
    t.check("inactivity before max duration", _sessions_of(exp, "e"),
            [(0, 0, 1, "inactivity"),
             (3 * HOUR, 3 * HOUR, 1, "end_of_input")])


def _selftest_duplicates_and_pages(t):
    cfg = Config(now_ms=10**13)
    lateness = cfg.allowed_lateness_ms
    path = t.write("dups.jsonl", [
        _ev("u", "y", 1000, "search"),
        _ev("u", "x", 1000, "home"),
        _ev("u", "x", 1000, "home"),          # exact duplicate
        _ev("u", "z", 2000),
        _ev("u", "w", 2001, "home"),
        _ev("u", "x", 1000 + lateness),       # within the window: dropped
        _ev("u", "x", 1001 + lateness, "p"),  # beyond it: counts again
    ])
    exp = compute_expected([path], cfg)
    t.check("duplicate collapse", _sessions_of(exp, "u"),
            [(1000, 1001 + lateness, 5, "end_of_input")])
    t.check("duplicates counted", exp.stats["duplicates"], 2)
    t.check("pages in order of first visit",
            [r[6] for r in exp.sessions], [("home", "search", "p")])
    # Identical (ts, event_id) with different pages: the first is kept.
    path = t.write("ambiguous.jsonl", [_ev("q", "k", 5, "A"),
                                       _ev("q", "k", 5, "B")])
    exp = compute_expected([path], cfg)
    t.check("ambiguous duplicate", (exp.sessions[0][5:7],
                                    exp.stats["ambiguous_duplicates"]),
            ((1, ("A",)), 1))
    # Sorting by (ts, event_id): "b" < "é" < "😀" by code point.
    path = t.write("order.jsonl", [_ev("o", "\U0001F600", 5, "third"),
                                   _ev("o", "\u00e9", 5, "second"),
                                   _ev("o", "b", 5, "first")])
    exp = compute_expected([path], cfg)
    t.check("tie order by event_id", exp.sessions[0][6],
            ("first", "second", "third"))
    # At most 64 distinct pages; repeats and nulls do not count.
    lines = [_ev("p", "e%03d" % i, i, "page%d" % (i // 2))
             for i in range(200)]
    lines.append({"uuid": "p", "event_id": "nul", "event_timestamp": 500,
                  "page_name": None})
    exp = compute_expected([t.write("pages.jsonl", lines)], cfg)
    t.check("64 pages", exp.sessions[0][6],
            tuple("page%d" % i for i in range(64)))
    t.check("event count with pages", exp.sessions[0][5], 201)


def _selftest_late(t):
    cfg = Config(now_ms=10**13, correction_horizon_ms=0)
    lines = [
        _ev("l", "1", 10_000_000),
        _ev("l", "2", 9_400_000),     # == watermark: on time
        _ev("l", "3", 9_399_999),     # < watermark: late
        "not json",
        _ev("m", "4", 1),             # late, watermark unchanged
        _ev("l", "5", 10_500_000),
        _ev("l", "6", 9_899_999),     # late against the new watermark
    ]
    p0 = t.write("late0.jsonl", lines)
    offsets = [0]
    for line in lines:
        text = json.dumps(line) if isinstance(line, dict) else line
        offsets.append(offsets[-1] + len(text.encode()) + 1)
    p1 = t.write("late1.jsonl", [_ev("n", "7", 5)])   # own watermark
    exp = compute_expected([p0, p1], cfg)
    t.check("late events", sorted(exp.late.elements()), sorted([
        ("l", "3", 9_399_999, 9_400_000, 0, offsets[2], 3),
        ("m", "4", 1, 9_400_000, 0, offsets[4], 5),
        ("l", "6", 9_899_999, 9_900_000, 0, offsets[6], 7),
    ]))
    t.check("late quarantine", list(exp.quarantine),
            [(b"not json", 0, offsets[3], 4)])
    t.check("other partition on time", _sessions_of(exp, "n"),
            [(5, 5, 1, "inactivity")])
    t.check("late events are not sessionized", _sessions_of(exp, "l"),
            [(9_400_000, 10_500_000, 3, "end_of_input")])
    # Within the correction horizon a late event joins its sessions instead.
    exp = compute_expected([p0, p1], Config(now_ms=10**13,
                                            correction_horizon_ms=1_000_000))
    t.check("late beyond the horizon", sorted(exp.late.elements()), [
        ("m", "4", 1, 9_400_000, 0, offsets[4], 5),
    ])
    t.check("late within the horizon are sessionized", _sessions_of(exp, "l"),
            [(9_399_999, 10_500_000, 5, "end_of_input")])


def _selftest_malformed(t):
    now = 1_700_000_000_000
    cfg = Config(now_ms=now, max_event_bytes=200)
    good = json.dumps(_ev("g", "g1", 7)).encode()
    bad = [
        b"{not json",
        b"[1, 2]",
        b'"a string"',
        b"\xff\xfe{}",
        b'{"event_id": "e", "event_timestamp": 1}',
        b'{"uuid": "", "event_id": "e", "event_timestamp": 1}',
        b'{"uuid": 5, "event_id": "e", "event_timestamp": 1}',
        b'{"uuid": "u", "event_timestamp": 1}',
        b'{"uuid": "u", "event_id": "", "event_timestamp": 1}',
        b'{"uuid": "u", "event_id": "e"}',
        b'{"uuid": "u", "event_id": "e", "event_timestamp": -1}',
        b'{"uuid": "u", "event_id": "e", "event_timestamp": -0}',
        b'{"uuid": "u", "event_id": "e", "event_timestamp": 1.0}',
        b'{"uuid": "u", "event_id": "e", "event_timestamp": 1e3}',
        b'{"uuid": "u", "event_id": "e", "event_timestamp": true}',
        b'{"uuid": "u", "event_id": "e", "event_timestamp": null}',
        b'{"uuid": "u", "event_id": "e", "event_timestamp": "12a"}',
        b'{"uuid": "u", "event_id": "e", "event_timestamp": ""}',
        b'{"uuid": "u", "event_id": "e", "event_timestamp": "-5"}',
        b'{"uuid": "u", "event_id": "e", "event_timestamp": " 5"}',
        b'{"uuid": "u", "event_id": "e", "event_timestamp": "\xd9\xa1"}',
        b'{"uuid": "u", "event_id": "e", "event_timestamp": NaN}',
        b'{"uuid": "u", "event_id": "e", "event_timestamp": 1, '
        b'"page_name": 3}',
        b'{"uuid": "u", "event_id": "e", "event_timestamp": 1, '
        b'"event_details": []}',
        b'{"uuid": "u\\ud800", "event_id": "e", "event_timestamp": 1}',
        ('{"uuid": "u", "event_id": "e", "event_timestamp": %d}'
         % (now + cfg.max_future_skew_ms + 1)).encode(),
        b'{"uuid": "u", "event_id": "e", "event_timestamp": 1, "pad": "'
        + b"x" * 200 + b'"}',
    ]
    valid = [
        good,
        b'{"uuid": "u", "event_id": "e1", "event_timestamp": "0012"}',
        b'{"uuid": "u", "event_id": "e2", "event_timestamp": 3, '
        b'"page_name": null, "event_details": null, "extra": [1]}',
        b'{"uuid": "u", "event_id": "e3", "event_timestamp": 4, '
        b'"event_details": {"k": 1}}',
        ('{"uuid": "u", "event_id": "e4", "event_timestamp": %d}'
         % (now + cfg.max_future_skew_ms)).encode(),
    ]
    for line in bad:
        event, reason = parse_event(line, cfg)
        t.check("malformed %r" % line[:70], event is None and bool(reason),
                True)
    for line in valid:
        event, reason = parse_event(line, cfg)
        t.check("valid %r" % line[:70], reason, None)
    t.check("string timestamp", parse_event(valid[1], cfg)[0][2], 12)

    # Line splitting, blank lines, CRLF, offsets and a missing final newline.
    raw = (b"\n"                      # line 1: empty, skipped
           + good + b"\r\n"           # line 2 at offset 1
           + b" \t\x0c\r\n"           # line 3: whitespace, skipped
           + b"garbage\r\n"           # line 4
           + b"\xc3\x28\n"            # line 5: bad UTF-8
           + b"tail")                 # line 6, no newline
    path = t.write("lines.jsonl", None, raw=raw)
    with open(path, "rb") as stream:
        t.check("iter_lines", list(iter_lines(stream)), [
            (2, 1, good),
            (4, len(good) + 8, b"garbage"),
            (5, len(good) + 17, b"\xc3\x28"),
            (6, len(good) + 20, b"tail"),
        ])
    exp = compute_expected([path], cfg)
    t.check("quarantine rows", sorted(exp.quarantine.elements()), sorted([
        (b"\xc3\x28", 0, len(good) + 17, 5),
        (b"garbage", 0, len(good) + 8, 4),
        (b"tail", 0, len(good) + 20, 6),
    ]))
    t.check("valid CRLF line", exp.stats["on_time_events"], 1)


def _selftest_iceberg(t):
    """Round trip: write the expected rows with pyiceberg, then check them."""
    try:
        import pyarrow as pa
        import pyiceberg.catalog.sql  # noqa: F401
    except ImportError as err:
        print("self-test: skipping the Iceberg round trip (%s)" % err,
              file=sys.stderr)
        return
    inputs = [
        t.write("ice0.jsonl", [_ev("a", "1", 0, "home"),
                               _ev("a", "2", 40 * MIN), "bad line",
                               _ev("b", "3", 39 * MIN, "x")]),
        t.write("ice1.jsonl", [_ev("a", "4", 1000), _ev("c", "5", 1)]),
    ]
    cfg = Config(now_ms=10**13)
    exp = compute_expected(inputs, cfg)
    warehouse = os.path.join(t.tmp, "warehouse")
    os.makedirs(warehouse)
    catalog = open_catalog(warehouse)
    catalog.create_namespace("sessions")

    def sessions_table(rows):
        cols = list(zip(*rows)) if rows else [[]] * len(SESSION_COLUMNS)
        data = dict(zip(SESSION_COLUMNS, cols))
        return pa.table({
            "user_id": pa.array(data["user_id"], pa.string()),
            "session_id": pa.array(data["session_id"], pa.string()),
            "session_start": pa.array(
                [v * 1000 for v in data["session_start"]],
                pa.timestamp("us", tz="UTC")),
            "session_start_time_ms": pa.array(data["session_start_time_ms"],
                                              pa.int64()),
            "session_end_time_ms": pa.array(data["session_end_time_ms"],
                                            pa.int64()),
            "session_duration_seconds": pa.array(
                data["session_duration_seconds"], pa.int64()),
            "event_count": pa.array(data["event_count"], pa.int64()),
            "pages_visited": pa.array([list(p) for p in
                                       data["pages_visited"]],
                                      pa.list_(pa.string())),
            "end_reason": pa.array(data["end_reason"], pa.string()),
        })

    sessions = sessions_table(exp.sessions)
    table = catalog.create_table("sessions.user_sessions",
                                 schema=sessions.schema)
    table.append(sessions, snapshot_properties={EPOCH_PROPERTY: "7"})
    quarantine = [dict(zip(QUARANTINE_COLUMNS, k), reason="bad",
                       source="x", epoch=7)
                  for k in exp.quarantine.elements()]
    q_arrow = pa.Table.from_pylist(quarantine, schema=pa.schema([
        ("raw", pa.binary()), ("reason", pa.string()),
        ("source", pa.string()), ("partition", pa.int32()),
        ("offset", pa.int64()), ("line_number", pa.int64()),
        ("epoch", pa.int64())]))
    catalog.create_table("sessions.user_sessions_quarantine",
                         schema=q_arrow.schema).append(q_arrow)
    late_schema = pa.schema([
        ("user_id", pa.string()), ("event_id", pa.string()),
        ("event_time_ms", pa.int64()), ("watermark_ms", pa.int64()),
        ("raw", pa.string()), ("source", pa.string()),
        ("partition", pa.int32()), ("offset", pa.int64()),
        ("line_number", pa.int64()), ("epoch", pa.int64())])
    catalog.create_table("sessions.user_sessions_late_events",
                         schema=late_schema)   # no late events: no snapshot

    args = argparse.Namespace(input=inputs, warehouse=warehouse,
                              database="sessions", table="user_sessions")
    problems, summary = check_warehouse(args, cfg)
    t.check("iceberg round trip problems", problems, [])
    t.check("iceberg round trip summary",
            (summary["ok"], summary["sessions"], summary["quarantined"],
             summary["late"], summary["epoch"]), (True, 4, 1, 0, "7"))

    # Tamper: one extra copy of a session row must be reported.
    table.append(sessions_table(exp.sessions[:1]),
                 snapshot_properties={EPOCH_PROPERTY: "8"})
    problems, summary = check_warehouse(args, cfg)
    t.check("iceberg tamper detected",
            (summary["ok"], summary["epoch"],
             any("1 extra" in p for p in problems),
             any("occurs 2 times" in p for p in problems)),
            (False, "8", True, True))


def self_test():
    """Run the built-in tests; returns the process exit status."""
    import shutil

    t = _SelfTest()
    try:
        for test in (_selftest_boundaries, _selftest_duplicates_and_pages,
                     _selftest_late, _selftest_malformed, _selftest_iceberg):
            try:
                test(t)
            except Exception as err:  # report and go on with the others
                import traceback
                t.failures.append("%s raised %s\n%s" % (
                    test.__name__, err, traceback.format_exc()))
    finally:
        shutil.rmtree(t.tmp, ignore_errors=True)
    for failure in t.failures:
        print("FAIL " + failure, file=sys.stderr)
    print(json.dumps({"ok": not t.failures, "self_test_checks": t.count,
                      "failures": len(t.failures)}))
    return 1 if t.failures else 0


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Check the sessionizer's Iceberg tables against an "
                    "independent reference computation.")
    parser.add_argument("--warehouse", help="warehouse directory "
                        "(holds catalog.db)")
    parser.add_argument("--input", action="append", default=[],
                        help="JSONL input file; repeat, in partition order")
    parser.add_argument("--database", default="sessions")
    parser.add_argument("--table", default="user_sessions")
    parser.add_argument("--inactivity-ms", type=int, default=1_800_000)
    parser.add_argument("--max-duration-ms", type=int, default=7_200_000)
    parser.add_argument("--allowed-lateness-ms", type=int, default=600_000)
    parser.add_argument("--correction-horizon-ms", type=int,
                        default=86_400_000)
    parser.add_argument("--max-future-skew-ms", type=int, default=86_400_000)
    parser.add_argument("--max-event-bytes", type=int, default=1_048_576)
    parser.add_argument("--now-ms", type=int, default=None,
                        help="'now' for the future-skew rule "
                             "(default: the wall clock)")
    parser.add_argument("--kafka-records", action="store_true",
                        help="each input is a Kafka partition dumped one "
                             "record per line")
    parser.add_argument("--summary-json", action="store_true",
                        help="print the JSON summary on failure too")
    parser.add_argument("--self-test", action="store_true",
                        help="run the built-in tests of the rules and exit")
    args = parser.parse_args(argv)
    if not args.self_test and (not args.warehouse or not args.input):
        parser.error("--warehouse and at least one --input are required")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.self_test:
        return self_test()
    config = Config(args.inactivity_ms, args.max_duration_ms,
                    args.allowed_lateness_ms, args.max_future_skew_ms,
                    args.max_event_bytes, args.now_ms, args.kafka_records,
                    args.correction_horizon_ms)
    try:
        problems, summary = check_warehouse(args, config)
    except Exception as err:
        print("check_tables: cannot run the check: %s: %s"
              % (type(err).__name__, err), file=sys.stderr)
        return 2
    if problems:
        print("check_tables: the tables do not match the input:",
              file=sys.stderr)
        for line in problems:
            print(line, file=sys.stderr)
        if args.summary_json:
            summary["problems"] = sum(1 for p in problems
                                      if not p.startswith(" "))
            print(json.dumps(summary))
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
