//! The word lists in `words/`, compiled in and parsed once: vocabulary is
//! data, apart from the rules that consult it, so a list is read and
//! extended without reading code. Each file says at its top what it is for.

use std::collections::HashMap;
use std::sync::LazyLock;

/// The entries of a word list: one word or phrase a line, trimmed; `#`
/// starts a comment, and blank lines are skipped.
pub(crate) fn list(text: &'static str) -> impl Iterator<Item = &'static str> {
    text.lines()
        .map(|line| line.split_once('#').map_or(line, |(entry, _)| entry).trim())
        .filter(|entry| !entry.is_empty())
}

/// `numbers.txt`: each word, its value, and whether it is a spoken digit
/// only.
fn number_words() -> impl Iterator<Item = (&'static str, u64, bool)> {
    list(include_str!("words/numbers.txt")).map(|line| {
        let mut parts = line.split_whitespace();
        let word = parts.next().unwrap_or_default();
        let Some(value) = parts.next().and_then(|v| v.parse().ok()) else {
            panic!("numbers.txt: `{line}` is not `word value`");
        };
        let spoken_digit = match parts.next() {
            None => false,
            Some("spoken-digit") => true,
            Some(other) => panic!("numbers.txt: unknown mark `{other}` in `{line}`"),
        };
        (word, value, spoken_digit)
    })
}

static NUMBERS: LazyLock<HashMap<&str, u64>> = LazyLock::new(|| {
    number_words()
        .filter(|&(_, _, spoken_digit)| !spoken_digit)
        .map(|(word, value, _)| (word, value))
        .collect()
});

static DIGITS: LazyLock<HashMap<&str, u8>> = LazyLock::new(|| {
    number_words()
        .filter(|&(_, value, _)| value < 10)
        .map(|(word, value, _)| (word, value as u8))
        .collect()
});

/// The value of a number word read as part of a numeral ("twenty",
/// "hundred"); spoken digits such as "oh" are not numbers here.
pub(crate) fn number(word: &str) -> Option<u64> {
    NUMBERS.get(word).copied()
}

/// The digit a word says when a number is read out digit by digit ("oh",
/// "niner" included).
pub(crate) fn digit(word: &str) -> Option<u8> {
    DIGITS.get(word).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_words_serve_numerals_and_spoken_digits() {
        assert_eq!(number("nineteen"), Some(19));
        assert_eq!(number("billion"), Some(1_000_000_000));
        assert_eq!(number("oh"), None);
        assert_eq!(digit("oh"), Some(0));
        assert_eq!(digit("niner"), Some(9));
        assert_eq!(digit("ten"), None);
    }

    /// Every list says what it is for and names each entry once.
    #[test]
    fn every_list_has_a_header_and_no_repeats() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/transcript/words");
        let mut files = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.starts_with("# "), "{} has no header", path.display());
            let entries: Vec<&str> = list(text.leak()).collect();
            let mut seen = std::collections::HashSet::new();
            for e in &entries {
                assert!(seen.insert(e), "{}: `{e}` twice", path.display());
            }
            assert!(!entries.is_empty(), "{} is empty", path.display());
            files += 1;
        }
        assert!(files >= 2);
    }
}
