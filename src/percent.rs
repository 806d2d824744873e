//! RFC 3986 percent-encoding of one URL component (a path segment or a
//! query value), shared by the Engine API client and managed resolution.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but the RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes every byte of `s` but the unreserved characters
/// (uppercase hex; non-ASCII as its UTF-8 bytes), so the result is one
/// opaque path segment or query value.
pub(crate) fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreserved_characters_pass() {
        assert_eq!(encode_component("a b/c"), "a%20b%2Fc");
        assert_eq!(encode_component("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(
            encode_component("?#[]@!$&'()*+,;=%"),
            "%3F%23%5B%5D%40%21%24%26%27%28%29%2A%2B%2C%3B%3D%25"
        );
        assert_eq!(encode_component("é\u{0}\n"), "%C3%A9%00%0A");
        assert_eq!(encode_component(""), "");
    }
}
