//! Client input inside error messages, bounded: a value is quoted and cut
//! to [`QUOTED_MAX_CHARS`] characters, a list to its first
//! [`LISTED_MAX`] entries and a count, and a whole message to
//! [`MESSAGE_MAX_BYTES`]. A 500 KB business name once came back whole in a
//! gRPC status header, which clients then refused as too large.

/// Characters of one client value quoted in a message, at most.
pub const QUOTED_MAX_CHARS: usize = 40;
/// Entries of a list of client values named in a message, at most.
pub const LISTED_MAX: usize = 5;
/// Bytes of any error message, at most.
pub const MESSAGE_MAX_BYTES: usize = 512;

/// `input` quoted (escaped as Rust's `{:?}` does), cut to
/// [`QUOTED_MAX_CHARS`] characters with its full length after it.
pub fn quoted(input: &str) -> String {
    let mut chars = input.chars();
    let head: String = chars.by_ref().take(QUOTED_MAX_CHARS).collect();
    if chars.next().is_none() {
        format!("{head:?}")
    } else {
        format!("{head:?}… ({} bytes)", input.len())
    }
}

/// The first [`LISTED_MAX`] of `inputs`, each [`quoted`], comma-separated,
/// and how many more there are.
pub fn quoted_list<S: AsRef<str>>(inputs: &[S]) -> String {
    let shown: Vec<String> = inputs.iter().take(LISTED_MAX).map(|input| quoted(input.as_ref())).collect();
    let more = inputs.len().saturating_sub(LISTED_MAX);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// `message` cut to at most [`MESSAGE_MAX_BYTES`] bytes (on a character
/// boundary, marked with `…`).
pub fn bounded(message: String) -> String {
    if message.len() <= MESSAGE_MAX_BYTES {
        return message;
    }
    let mut end = MESSAGE_MAX_BYTES - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole_and_long_ones_cut() {
        assert_eq!(quoted("pgc"), "\"pgc\"");
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
        let long = "é".repeat(100_000);
        let shown = quoted(&long);
        assert!(shown.len() < 120 && shown.ends_with("(200000 bytes)"), "{shown}");
    }

    #[test]
    fn lists_name_a_few_and_count_the_rest() {
        assert_eq!(quoted_list(&["a", "b"]), "\"a\", \"b\"");
        let many: Vec<String> = (0..1000).map(|n| n.to_string()).collect();
        assert!(quoted_list(&many).ends_with("\"4\" and 995 more"));
    }

    #[test]
    fn messages_are_cut_on_a_character_boundary() {
        assert_eq!(bounded("short".to_owned()), "short");
        let cut = bounded("ü".repeat(1000));
        assert!(cut.len() <= MESSAGE_MAX_BYTES && cut.ends_with('…'), "{}", cut.len());
    }
}
