//! How a generated event is written: one JSON line, in the shapes real producers send (the
//! timestamp as a number or a string, bookings as an id or an object), or with one flaw.

use super::{Event, Flaw, Generator, HOUR_MS, YEAR_2100_MS};

impl Generator {
    /// Writes an event as one JSON line, by hand: serializing through serde costs more than the
    /// whole simulation, and every string here is known to need no escaping.
    pub(super) fn render(&mut self, event: &Event, flaw: Option<Flaw>) {
        let line = &mut self.line;
        let bits = event.bits;
        let page = event.page.info();
        let (uuid_hi, uuid_lo) = user_uuid(self.config.seed, event.user);

        line.extend_from_slice(b"{\"event_id\":\"e-");
        line.extend_from_slice(&self.id_prefix);
        line.push(b'-');
        push_u64(line, event.seq);
        line.extend_from_slice(b"\",\"page_name\":\"");
        line.extend_from_slice(page.name.as_bytes());
        if flaw == Some(Flaw::InvalidUtf8) {
            line.extend_from_slice(&[0xff, 0xfe]);
        }
        line.push(b'"');

        match flaw {
            Some(Flaw::MissingTimestamp) => {}
            Some(Flaw::TextTimestamp) => line.extend_from_slice(b",\"event_timestamp\":\"abc\""),
            Some(Flaw::NegativeTimestamp) => line.extend_from_slice(b",\"event_timestamp\":-5"),
            Some(Flaw::FarFuture) => {
                push_timestamp(line, YEAR_2100_MS + event.time % (24 * HOUR_MS), bits);
            }
            _ => push_timestamp(line, event.time, bits),
        }

        line.extend_from_slice(b",\"booking_details\":");
        let shape = bits >> 40;
        if page.booking {
            // One booking per user and day, so that the cart, checkout and payment of a trip agree.
            let booking = mix(uuid_lo ^ (event.time / (24 * HOUR_MS)));
            let reference = booking & 0xff_ffff;
            if shape.is_multiple_of(4) {
                line.extend_from_slice(b"\"BK-");
                push_hex(line, reference, 6);
                line.push(b'"');
            } else {
                line.extend_from_slice(b"{\"booking_id\":\"BK-");
                push_hex(line, reference, 6);
                line.extend_from_slice(b"\",\"product\":\"");
                let product = ["hotel", "flight", "package"][(booking >> 24) as usize % 3];
                line.extend_from_slice(product.as_bytes());
                line.extend_from_slice(b"\",\"amount\":");
                let cents = 4_900 + (booking >> 32) % 200_000;
                push_u64(line, cents / 100);
                line.push(b'.');
                line.push(b'0' + (cents / 10 % 10) as u8);
                line.push(b'0' + (cents % 10) as u8);
                line.extend_from_slice(b",\"currency\":\"");
                let currency = ["EUR", "USD", "GBP"][(booking >> 28) as usize % 3];
                line.extend_from_slice(currency.as_bytes());
                line.extend_from_slice(b"\"}");
            }
        } else if shape.is_multiple_of(16) {
            line.extend_from_slice(b"\"none\"");
        } else {
            line.extend_from_slice(b"null");
        }

        match flaw {
            Some(Flaw::MissingUuid) => {}
            Some(Flaw::EmptyUuid) => line.extend_from_slice(b",\"uuid\":\"\""),
            _ => {
                line.extend_from_slice(b",\"uuid\":\"");
                push_hex(line, uuid_hi >> 32, 8);
                line.push(b'-');
                push_hex(line, (uuid_hi >> 16) & 0xffff, 4);
                line.push(b'-');
                push_hex(line, uuid_hi & 0xffff, 4);
                line.push(b'-');
                push_hex(line, uuid_lo >> 48, 4);
                line.push(b'-');
                push_hex(line, uuid_lo & 0xffff_ffff_ffff, 12);
                line.push(b'"');
            }
        }

        if flaw == Some(Flaw::DetailsNotObject) {
            line.extend_from_slice(b",\"event_details\":\"click\"}\n");
            return;
        }
        line.extend_from_slice(b",\"event_details\":{\"event_name\":\"");
        let value = bits >> 16;
        match ((bits >> 1) % 100, page.form) {
            (0..40, _) => {
                line.extend_from_slice(
                    b"page_loaded\",\"event_type\":\"page_view\",\"event_value\":",
                );
                if value.is_multiple_of(8) {
                    line.extend_from_slice(b"null");
                } else {
                    // Load time in milliseconds.
                    push_u64(line, 150 + value % 3_000);
                }
            }
            (40..75, _) => {
                line.extend_from_slice(page.clicks[value as usize % page.clicks.len()].as_bytes());
                line.extend_from_slice(b"\",\"event_type\":\"click\",\"event_value\":\"position_");
                push_u64(line, 1 + (value >> 8) % 20);
                line.push(b'"');
            }
            (75..90, _) => {
                line.extend_from_slice(
                    b"scroll_depth\",\"event_type\":\"scroll\",\"event_value\":",
                );
                push_u64(line, 25 * (1 + value % 4));
            }
            (_, Some(form)) => {
                line.extend_from_slice(form.as_bytes());
                line.extend_from_slice(b"\",\"event_type\":\"submit\",\"event_value\":");
                line.extend_from_slice(if value.is_multiple_of(5) {
                    b"\"validation_error\"".as_slice()
                } else {
                    b"\"ok\"".as_slice()
                });
            }
            (_, None) => {
                line.extend_from_slice(b"tooltip\",\"event_type\":\"hover\",\"event_value\":null");
            }
        }
        line.extend_from_slice(b"}}\n");
    }
}

/// The hex digits that identify `seed` in every `event_id`.
pub(super) fn id_prefix(seed: u64) -> [u8; 8] {
    let prefix = mix(seed ^ ID_SALT) >> 32;
    let mut digits = [0; 8];
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
    }
    digits
}

/// Producers disagree on the type of `event_timestamp`, so half the events carry it as a string.
fn push_timestamp(line: &mut Vec<u8>, ms: u64, bits: u64) {
    if bits & 1 == 0 {
        line.extend_from_slice(b",\"event_timestamp\":\"");
        push_u64(line, ms);
        line.push(b'"');
    } else {
        line.extend_from_slice(b",\"event_timestamp\":");
        push_u64(line, ms);
    }
}

/// A version-4-looking UUID of the user, as two halves: stable across runs, unlike a random one,
/// and distinct for the users of one seed but for a 2^-122 chance.
fn user_uuid(seed: u64, user: u64) -> (u64, u64) {
    let hi = mix(seed ^ mix(user ^ UUID_SALT));
    let lo = mix(hi ^ UUID_SALT);
    ((hi & !0xf000) | 0x4000, (lo & !(0b11 << 62)) | (0b10 << 62))
}

/// Keep the hashes of the seed for event ids and user ids apart, and away from `mix(0) == 0`.
const ID_SALT: u64 = 0x243f_6a88_85a3_08d3;
const UUID_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 finalizer: cheap, and a bijection on `u64`.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The low `digits` hex digits of `value`.
fn push_hex(line: &mut Vec<u8>, value: u64, digits: u32) {
    for i in (0..digits).rev() {
        line.push(HEX[((value >> (4 * i)) & 0xf) as usize]);
    }
}

fn push_u64(line: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    line.extend_from_slice(&digits[start..]);
}
