//! Word error rate: how tests and benchmarks judge a transcript against a
//! reference.
//!
//! Both sides are normalised first so that casing and punctuation, which
//! Whisper chooses freely, do not count as errors. Numbers stay as written
//! ("10" and "ten" differ): converting them would hide real mistakes.

/// Lowercases, drops punctuation and collapses whitespace.
///
/// Hyphens, dashes and slashes separate words ("well-known" → "well known");
/// a `.` or `,` between two digits is kept ("3.5", "1,000"); apostrophes are
/// dropped inside words ("don't" → "dont") so either spelling matches.
pub fn normalize(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        let digit_at = |j: Option<usize>| {
            j.and_then(|j| chars.get(j))
                .is_some_and(|c| c.is_ascii_digit())
        };
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if (c == '.' || c == ',') && digit_at(i.checked_sub(1)) && digit_at(Some(i + 1)) {
            out.push(c);
        } else if c.is_whitespace() || matches!(c, '-' | '–' | '—' | '/') {
            out.push(' ');
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
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
            "well known 3.5 of 1,000 calls"
        );
        assert_eq!(normalize("Ünïcode ÉTÉ"), "ünïcode été");
        assert_eq!(normalize("...?!"), "");
        // Numbers are not spelled out.
        assert_ne!(normalize("10"), normalize("ten"));
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
