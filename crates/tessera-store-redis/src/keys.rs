//! Key names, and the escaping that keeps cluster hash tags intact.

/// Escapes `input` so that it can sit inside a `{…}` hash tag: every byte
/// that is not printable ASCII, and `{`, `}` and `%` themselves, become
/// `%XX`. The mapping is injective (a literal `%` is always escaped), so two
/// different user IDs never share a key, and the result never contains a
/// brace, so a user ID such as `a}b` cannot end the hash tag early and send
/// the user's keys to different slots.
pub(crate) fn escape(input: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(input.len());
    for &byte in input.as_bytes() {
        if byte.is_ascii_graphic() && !matches!(byte, b'{' | b'}' | b'%') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[(byte >> 4) as usize] as char);
            out.push(HEX[(byte & 0xf) as usize] as char);
        }
    }
    out
}

/// Escapes only the braces of a key prefix (as `%7B`/`%7D`): a brace in the
/// prefix would otherwise open the hash tag before ours does. The prefix is
/// operator-chosen and fixed, so readability wins over injectivity here.
pub(crate) fn escape_prefix(prefix: &str) -> String {
    prefix.replace('{', "%7B").replace('}', "%7D")
}

/// The hash-tag content for a user. An empty tag (`{}`) would make Redis hash
/// the whole key instead, scattering the user's keys; a lone `%` cannot be
/// produced by [`escape`] (it always emits `%XX`), so it names the empty
/// user ID unambiguously.
pub(crate) fn user_tag(user_id: &str) -> String {
    if user_id.is_empty() {
        "%".to_owned()
    } else {
        escape(user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_braces_and_is_injective() {
        assert_eq!(escape("alice@example.com"), "alice@example.com");
        assert_eq!(escape("a}b{c"), "a%7Db%7Bc");
        assert_eq!(escape("50%"), "50%25");
        assert_eq!(escape("a b"), "a%20b");
        assert_eq!(escape("é"), "%C3%A9");
        assert_ne!(escape("%7D"), escape("}"));
        assert_eq!(user_tag(""), "%");
        assert_ne!(user_tag(""), user_tag("%"));
    }
}
