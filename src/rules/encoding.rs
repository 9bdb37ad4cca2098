//! The compact byte encoding that histories and pending events share: unsigned numbers as
//! variable-length integers (seven bits a byte, lowest first) and texts prefixed by their length.

/// How many bytes [`push_varint`] writes for `value`.
pub(super) fn varint_len(value: u64) -> usize {
    (u64::BITS - value.leading_zeros()).max(1).div_ceil(7) as usize
}

pub(super) fn push_varint(bytes: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        bytes.push(value as u8 | 0x80);
        value >>= 7;
    }
    bytes.push(value as u8);
}

/// How many bytes [`push_text`] writes for `text`.
pub(super) fn text_len(text: &str) -> usize {
    varint_len(text.len() as u64) + text.len()
}

pub(super) fn push_text(bytes: &mut Vec<u8>, text: &str) {
    push_varint(bytes, text.len() as u64);
    bytes.extend_from_slice(text.as_bytes());
}

/// `None` where the bytes end or are not what [`push_varint`] writes: a damaged checkpoint's
/// history ends there.
pub(super) fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

pub(super) fn take_text<'a>(bytes: &mut &'a [u8]) -> Option<&'a str> {
    let length = usize::try_from(take_varint(bytes)?).ok()?;
    let (text, rest) = bytes.split_at_checked(length)?;
    *bytes = rest;
    std::str::from_utf8(text).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn numbers_and_texts_read_back_as_written(
            items in prop::collection::vec((any::<u64>(), ".{0,200}"), 0..20),
        ) {
            let mut bytes = Vec::new();
            for (number, text) in &items {
                push_varint(&mut bytes, *number);
                push_text(&mut bytes, text);
            }
            let expected: usize = items.iter().map(|(n, t)| varint_len(*n) + text_len(t)).sum();
            prop_assert_eq!(bytes.len(), expected);
            let mut rest = &bytes[..];
            for (number, text) in &items {
                prop_assert_eq!(take_varint(&mut rest), Some(*number));
                prop_assert_eq!(take_text(&mut rest), Some(text.as_str()));
            }
            prop_assert!(rest.is_empty());
        }
    }
}
