//! Word error rate: how tests and benchmarks judge a transcript against a
//! reference.
//!
//! Both sides are normalised first so that what Whisper chooses freely
//! does not count as an error: casing, punctuation, and how numbers are
//! written ("1" = "one", "415" = "four one five" = "four hundred fifteen").
//! Numbers become digits, and every digit counts as a word: a digit string
//! read one digit at a time and the same number written as a numeral then
//! score alike, and a wrong digit is one error whichever way it is written.
//! The number words are `words/numbers.txt`, which redaction reads too.

use crate::transcript::words;

/// Lowercases, drops punctuation, writes numbers as separate digits and
/// collapses whitespace.
///
/// Hyphens, dashes and slashes separate words ("well-known" → "well known");
/// a `,` between two digits is a thousands separator and dropped ("1,000");
/// a `.` between two digits is a decimal point ("3.5" → "3 point 5");
/// apostrophes are dropped inside words ("don't" → "dont") so either
/// spelling matches. Number words are read as numbers ("twenty one" → 21,
/// "two hundred and five" → 205, "one two three" → 1 2 3); then every
/// number is written digit by digit ("21" → "2 1").
pub fn normalize(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        let digit_at = |j: Option<usize>| {
            j.and_then(|j| chars.get(j))
                .is_some_and(|c| c.is_ascii_digit())
        };
        let between_digits = digit_at(i.checked_sub(1)) && digit_at(Some(i + 1));
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if c == ',' && between_digits {
        } else if c == '.' && between_digits {
            out.push_str(" point ");
        } else if c.is_whitespace() || matches!(c, '-' | '–' | '—' | '/') {
            out.push(' ');
        }
    }
    let words: Vec<&str> = out.split_whitespace().collect();
    let mut digits: Vec<String> = Vec::with_capacity(words.len());
    for w in numbers_as_digits(&words) {
        // Digits one by one; letters glued to them ("10am") a word apart.
        let mut letters = String::new();
        for ch in w.chars() {
            if ch.is_ascii_digit() {
                if !letters.is_empty() {
                    digits.push(std::mem::take(&mut letters));
                }
                digits.push(ch.to_string());
            } else {
                letters.push(ch);
            }
        }
        if !letters.is_empty() {
            digits.push(letters);
        }
    }
    digits.join(" ")
}

/// A unit or teen (0–19) of `words/numbers.txt`.
fn small_number(w: &str) -> Option<u64> {
    words::number(w).filter(|&n| n < 20)
}

/// Twenty, thirty… ninety.
fn tens(w: &str) -> Option<u64> {
    words::number(w).filter(|n| (20..100).contains(n))
}

/// Thousand, million, billion.
fn scale(w: &str) -> Option<u64> {
    words::number(w).filter(|&n| n >= 1_000)
}

/// Replaces each spoken cardinal number in `words` by its numeral. A unit
/// after a unit starts a new number ("one two" → 1 2); "and" joins only
/// after "hundred" or a scale word ("one hundred and five" → 105).
fn numbers_as_digits(words: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let starts = small_number(words[i]).is_some() || tens(words[i]).is_some();
        if !starts {
            out.push(words[i].to_string());
            i += 1;
            continue;
        }
        // (total of finished scale groups, the group being read)
        let (mut total, mut group) = (0u64, 0u64);
        // What the last word was: a unit/teen, tens, hundred, or a scale.
        #[derive(PartialEq, Clone, Copy)]
        enum Last {
            Unit,
            Tens,
            Hundred,
            Scale,
        }
        let mut last: Option<Last> = None;
        while i < words.len() {
            let w = words[i];
            if let Some(n) = small_number(w) {
                let fits = match last {
                    None | Some(Last::Hundred | Last::Scale) => true,
                    Some(Last::Tens) => n < 10,
                    Some(Last::Unit) => false,
                };
                if !fits {
                    break;
                }
                group += n;
                last = Some(Last::Unit);
            } else if let Some(n) = tens(w) {
                if matches!(last, Some(Last::Unit | Last::Tens)) {
                    break;
                }
                group += n;
                last = Some(Last::Tens);
            } else if words::number(w) == Some(100) && matches!(last, Some(Last::Unit | Last::Tens))
            {
                // "four hundred", "fifteen hundred", "twenty one hundred".
                group = (group - group % 100) + (group % 100) * 100;
                last = Some(Last::Hundred);
            } else if let Some(s) = scale(w).filter(|_| last.is_some() && last != Some(Last::Scale))
            {
                total = total.saturating_add(group.max(1).saturating_mul(s));
                group = 0;
                last = Some(Last::Scale);
            } else if w == "and"
                && matches!(last, Some(Last::Hundred | Last::Scale))
                && words
                    .get(i + 1)
                    .is_some_and(|n| small_number(n).is_some() || tens(n).is_some())
            {
            } else {
                break;
            }
            i += 1;
        }
        out.push(total.saturating_add(group).to_string());
    }
    out
}

/// Edit counts of a hypothesis against a reference, in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WerStats {
    pub substitutions: usize,
    pub deletions: usize,
    pub insertions: usize,
    /// Words in the normalised reference.
    pub reference_words: usize,
}

impl WerStats {
    pub fn errors(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    /// `errors / reference_words`; can exceed 1 with many insertions. An
    /// empty reference counts each inserted word as one whole error.
    pub fn wer(&self) -> f64 {
        self.errors() as f64 / self.reference_words.max(1) as f64
    }
}

/// Word-level Levenshtein alignment of normalised `hypothesis` to `reference`.
pub fn word_errors(reference: &str, hypothesis: &str) -> WerStats {
    let reference = normalize(reference);
    let hypothesis = normalize(hypothesis);
    let r: Vec<&str> = reference.split(' ').filter(|w| !w.is_empty()).collect();
    let h: Vec<&str> = hypothesis.split(' ').filter(|w| !w.is_empty()).collect();

    // One row of the DP table at a time; each cell carries the edit counts of
    // its best path so no backtrace matrix is needed.
    let cell = |s, d, i| WerStats {
        substitutions: s,
        deletions: d,
        insertions: i,
        reference_words: 0,
    };
    let mut prev: Vec<WerStats> = (0..=h.len()).map(|j| cell(0, 0, j)).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut row = Vec::with_capacity(h.len() + 1);
        row.push(cell(0, i + 1, 0));
        for (j, hw) in h.iter().enumerate() {
            let diag = prev[j];
            let substitute = if rw == hw {
                diag
            } else {
                WerStats {
                    substitutions: diag.substitutions + 1,
                    ..diag
                }
            };
            let delete = WerStats {
                deletions: prev[j + 1].deletions + 1,
                ..prev[j + 1]
            };
            let insert = WerStats {
                insertions: row[j].insertions + 1,
                ..row[j]
            };
            // Ties prefer substitution, then deletion: a stable, conventional choice.
            let best = [substitute, delete, insert]
                .into_iter()
                .min_by_key(WerStats::errors)
                .unwrap_or(substitute);
            row.push(best);
        }
        prev = row;
    }
    WerStats {
        reference_words: r.len(),
        ..prev[h.len()]
    }
}

/// Word error rate of `hypothesis` against `reference`, after [`normalize`].
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    word_errors(reference, hypothesis).wer()
}

#[cfg(test)]
mod tests {
    use super::*;

    const JFK: &str = "And so my fellow Americans, ask not what your country can do for you, \
                       ask what you can do for your country.";

    #[test]
    fn normalisation() {
        assert_eq!(normalize("  Hello,   World!\n"), "hello world");
        assert_eq!(normalize("Don't STOP—now"), "dont stop now");
        assert_eq!(
            normalize("well-known 3.5% of 1,000 calls."),
            "well known 3 point 5 of 1 0 0 0 calls"
        );
        assert_eq!(normalize("Ünïcode ÉTÉ"), "ünïcode été");
        assert_eq!(normalize("...?!"), "");
    }

    #[test]
    fn numbers_however_written() {
        let same = |a: &str, b: &str| assert_eq!(normalize(a), normalize(b), "{a} vs {b}");
        same("1", "one");
        same("10", "ten");
        same("21", "twenty-one");
        same(
            "415-555-0134",
            "four one five, five five five, zero one three four",
        );
        same("415", "four hundred fifteen");
        same("205", "two hundred and five");
        same("1,250", "one thousand two hundred fifty");
        same("2015", "twenty fifteen");
        same("1500", "fifteen hundred");
        same("3.5", "three point five");
        same("at 10am", "at ten am");
        assert_eq!(normalize("one two three"), "1 2 3");
        assert_eq!(normalize("ninety nine bottles"), "9 9 bottles");
        // "and" is a word unless it joins the parts of one number.
        assert_eq!(normalize("one and two"), "1 and 2");
        assert_eq!(normalize("a hundred"), "a hundred");
        assert_eq!(normalize("thousand island"), "thousand island");
        // A wrong digit is one error however it is written.
        assert_eq!(word_errors("four one five", "415").errors(), 0);
        assert_eq!(word_errors("four one five", "416").errors(), 1);
    }

    #[test]
    fn identical_up_to_case_and_punctuation_is_zero() {
        let hyp = "and so, my fellow americans: ask not what your country can do for you - \
                   ask what you can do for your country";
        assert_eq!(wer(JFK, hyp), 0.0);
    }

    #[test]
    fn counts_each_kind_of_edit() {
        let s = word_errors("the cat sat on the mat", "the bat sat on mat");
        assert_eq!(
            (
                s.substitutions,
                s.deletions,
                s.insertions,
                s.reference_words
            ),
            (1, 1, 0, 6)
        );
        assert!((s.wer() - 2.0 / 6.0).abs() < 1e-12);
        let s = word_errors("a b c d", "a x c d e");
        assert_eq!((s.substitutions, s.deletions, s.insertions), (1, 0, 1));
        assert!((s.wer() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(wer("", ""), 0.0);
        assert_eq!(wer("", "two words"), 2.0);
        assert_eq!(wer("three words here", ""), 1.0);
        assert_eq!(word_errors("a b c", "c b a").errors(), 2);
        // Insertions can push WER past 1.
        assert!(wer("hi", "hi there you all") > 1.0);
    }

    #[test]
    fn minimal_alignment_not_greedy() {
        // A shifted sentence is one deletion + one insertion, not n substitutions.
        let s = word_errors("a b c d e f", "b c d e f g");
        assert_eq!(s.errors(), 2);
        assert_eq!((s.deletions, s.insertions), (1, 1));
    }
}
